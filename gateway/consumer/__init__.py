"""Consume the gateway's events: typed events, a durable queue with ack after handling, bounded
retries and a dead-letter queue, de-duplication on ``id``, CDR legs grouped by call.

The documentation's "The consumer library" page has an example (a test runs it).
"""

from gateway.consumer.calls import Call, CallLegs
from gateway.consumer.dedupe import DedupeStore, MemoryDedupe
from gateway.consumer.events import Event, GenericEvent, NotAnEvent, parse_event
from gateway.consumer.runner import (
    REASON_HEADER,
    Consumer,
    ConsumerError,
    Delivery,
    topic_matches,
)

__all__ = [
    "REASON_HEADER",
    "Call",
    "CallLegs",
    "Consumer",
    "ConsumerError",
    "DedupeStore",
    "Delivery",
    "Event",
    "GenericEvent",
    "MemoryDedupe",
    "NotAnEvent",
    "parse_event",
    "topic_matches",
]
