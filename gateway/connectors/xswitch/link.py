"""The NATS session of one XSwitch link: core subscriptions, or a JetStream durable consumer.

Core NATS delivers only to whoever listens at that moment, so by default (``jetstream: auto``,
when the server has JetStream) the gateway captures the XCC subjects in a stream of its own and
reads them through a durable pull consumer, acknowledging each message only after its events are
in the outbox: a gateway restart or a NATS reconnect then resumes where it stopped.

The stream is created with ``no_ack`` so that a node's *request* on a captured subject is not
answered by JetStream's publish acknowledgement in place of the controller it was meant for.

A ``tls://`` URL requires TLS. nats-py upgrades the connection only when the server's INFO
says ``tls_required`` and otherwise sends its CONNECT - user and password, token, JWT - in
clear; :class:`TlsClient` refuses to send it unless the connection is encrypted by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from gateway.connectors.xswitch.settings import CTRL_SUBJECT, XSwitchPbxSettings
from gateway.logging import get_logger
from gateway.runtime.http_client import tls_context

log = get_logger("connectors.xswitch.nats")

#: JetStream's error code for "subjects overlap with an existing stream".
STREAM_SUBJECT_OVERLAP = 10065

#: ``(body, position) -> None``, done when the message's events are handed over, in order:
#: durable at once (through ``emit``), or staged by the spool and durable only after ``sync``,
#: which :func:`serve` calls before it acks. Raising leaves the message unacked. ``position``
#: is ``<stream>:<sequence>`` for a JetStream message, else None.
Handle = Callable[[bytes, str | None], Awaitable[None]]

#: Messages one drain of the core-NATS queue hands over before it yields to the event loop: on
#: the spool path ``handle`` never yields, and a large backlog would otherwise starve the other
#: links (their heartbeats, their reads) for a whole turn.
DRAIN_YIELD_EVERY = 100

#: How long the close of a connection that failed to open may take.
CLOSE_TIMEOUT_S = 2.0


def subjects(pbx: XSwitchPbxSettings) -> list[str]:
    """Every subject the link reads, with the tenant prefix: the shared controller subject
    and this controller's own (``ctrl/serve.go`` ``EnableApp``), the other controllers' own
    (``observe_subjects``: a call a controller accepted is reported only there), CDRs on
    theirs. A subject a wildcard of the list already covers is left out (a message is read
    once; JetStream refuses overlapping subjects)."""
    names = [
        CTRL_SUBJECT,
        f"{CTRL_SUBJECT}.{pbx.ctrl_uuid}",
        *pbx.observe_subjects,
        *pbx.cdr_subjects,
    ]
    unique = list(dict.fromkeys(pbx.subject_prefix + name for name in names))
    return [s for s in unique if not any(o != s and covers(o, s) for o in unique)]


def covers(pattern: str, subject: str) -> bool:
    """Whether NATS subject ``pattern`` (``*`` one token, ``>`` the rest) matches every
    subject ``subject`` (itself possibly a wildcard) matches."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have):
            return False
        if token == "*":
            if have[i] == ">":
                return False
            continue
        if token != have[i]:
            return False
    return len(want) == len(have)


class PlaintextRefused(NatsError):
    """The server did not start TLS although the link requires it: nothing was sent."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"the NATS server at {where} did not start TLS (its INFO does not ask for it) and"
            " nats_url is tls://: the gateway sends no CONNECT, and no credentials, in clear."
            " Enable TLS on the server, or set nats_tls_handshake_first for a server with"
            " tls { handshake_first: true }"
        )


class TlsClient(Nats):
    """nats-py's client that sends its CONNECT only over TLS when ``require_tls`` is set.

    nats-py builds the CONNECT (with every credential) in ``_connect_command`` right before
    it writes it, after any TLS upgrade: the check sits there, on the connection itself, so it
    holds whatever the server's INFO said, on the first connection as on a reconnect."""

    require_tls = False

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        # A server that takes TLS without requiring it (allow_non_tls) says tls_available; a
        # link that requires TLS upgrades there too, as NATS's Go client does. (nats-py reads
        # tls_required from this same dict right after, to decide on the upgrade.)
        if self.require_tls and initial_connection and info.get("tls_available"):
            info["tls_required"] = True
        await super()._process_info(info, initial_connection)

    def _connect_command(self) -> bytes:
        if self.require_tls and not _encrypted(self._transport):
            server = self._current_server
            where = f"{server.uri.hostname}:{server.uri.port}" if server else "?"
            raise PlaintextRefused(where)
        return super()._connect_command()


def _encrypted(transport: object) -> bool:
    """Whether nats-py's TCP transport runs TLS now; anything it cannot tell is no."""
    writer = getattr(transport, "_io_writer", None)
    get = getattr(writer, "get_extra_info", None)
    return get is not None and get("ssl_object") is not None


def tls_options(pbx: XSwitchPbxSettings) -> ssl.SSLContext:
    """What the link's TLS trusts (the system's CAs and the PBX's ``ca_file``) and shows (its
    client certificate), whether TLS is required (``tls://``) or the server asks for it."""
    context = tls_context(pbx.ca_file)
    if pbx.nats_cert_file is not None and pbx.nats_key_file is not None:
        context.load_cert_chain(str(pbx.nats_cert_file), str(pbx.nats_key_file))
    return context


async def connect(pbx: XSwitchPbxSettings, **options: Any) -> Nats:
    """A connected client for the PBX's NATS: its TLS and credentials settings, no reconnects
    of nats-py's own (the link's loop reconnects). ``options`` go to nats-py (callbacks...)."""
    nc = TlsClient()
    nc.require_tls = pbx.nats_url.startswith("tls://")
    settings: dict[str, Any] = {
        "servers": [pbx.nats_url],
        "allow_reconnect": False,
        "connect_timeout": pbx.request_timeout_s,
        "tls": tls_options(pbx),
        "tls_handshake_first": pbx.nats_tls_handshake_first,
    }
    if pbx.nats_creds_file is not None:
        settings["user_credentials"] = str(pbx.nats_creds_file)
    if pbx.nats_nkey_seed_file is not None:
        settings["nkeys_seed"] = str(pbx.nats_nkey_seed_file)
    try:
        await nc.connect(**settings, **options)
    except BaseException:
        # After a failed TLS handshake nats-py's close waits for a stream whose protocol the
        # handshake replaced, forever (the socket itself is closed by then): bounded.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT_S)
        raise
    return nc


@dataclass
class NatsSession:
    """One connection; ``closed`` is set when NATS drops it (``reason`` says why)."""

    nc: Nats
    jetstream: bool
    backlog: int = 0  # messages the durable consumer held when the session began
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = "the NATS connection closed"
    pull: JetStreamContext.PullSubscription | None = None
    queue: asyncio.Queue[Msg] = field(default_factory=asyncio.Queue)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()


async def open_session(pbx: XSwitchPbxSettings) -> NatsSession:
    """Connect without nats-py's own reconnects: the link's loop reconnects, with backoff, and
    reports every interruption (``gateway.connection``, ``gateway.gap``)."""
    holder: list[NatsSession] = []

    async def on_closed() -> None:
        if holder:
            holder[0].closed.set()

    async def on_disconnected() -> None:
        if holder:
            holder[0].reason = "the NATS server closed the connection"
            holder[0].closed.set()

    async def on_error(exc: Exception) -> None:
        if holder:
            holder[0].reason = f"NATS error: {type(exc).__name__}: {exc}"

    nc = await connect(
        pbx,
        name=f"pbx-gateway-{pbx.tenant}",
        ping_interval=pbx.ping_interval_s,
        max_outstanding_pings=2,
        closed_cb=on_closed,
        disconnected_cb=on_disconnected,
        error_cb=on_error,
    )
    try:
        use_js = await _wants_jetstream(nc, pbx)
        session = NatsSession(nc=nc, jetstream=use_js)
        holder.append(session)
        if use_js:
            try:
                await _bind_consumer(session, pbx)
            except APIError as exc:
                # 10065: a stream someone else made already captures these subjects; with
                # ``auto`` the link reads them on core NATS rather than not at all.
                if exc.err_code != STREAM_SUBJECT_OVERLAP or pbx.jetstream == "on":
                    raise
                log.warning("xswitch.jetstream_overlap", tenant=pbx.tenant, error=str(exc))
                session.jetstream = use_js = False
        if not use_js:
            for subject in subjects(pbx):
                await nc.subscribe(subject, cb=session.queue.put)
            await nc.flush()
        return session
    except BaseException:
        await nc.close()
        raise


async def _wants_jetstream(nc: Nats, pbx: XSwitchPbxSettings) -> bool:
    if pbx.jetstream == "off":
        return False
    try:
        await nc.jetstream(timeout=pbx.request_timeout_s).account_info()
    except Exception as exc:
        if pbx.jetstream == "on":
            raise RuntimeError(f"jetstream: on, but the server has none ({exc})") from exc
        return False
    return True


async def _bind_consumer(session: NatsSession, pbx: XSwitchPbxSettings) -> None:
    js = session.nc.jetstream(timeout=pbx.request_timeout_s)
    name = pbx.stream_name()
    mark = f"pbx-gateway: the XCC subjects of {pbx.tenant}"
    config = StreamConfig(
        name=name,
        description=mark,
        subjects=subjects(pbx),
        storage=StorageType.FILE,
        max_age=pbx.stream_max_age_s,
        max_bytes=pbx.stream_max_bytes,
        no_ack=True,
    )
    try:
        info = await js.stream_info(name)
        ours = info.config.description == mark
        if ours:
            await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)
        ours = True
    durable = f"gateway-{pbx.tenant}"
    consumer = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=pbx.ack_wait_s,
        # The gateway's own stream holds only what came for it: take all of it (also when an
        # earlier attempt made the stream but not the consumer). A stream someone else made
        # holds history the gateway never promised: start from now.
        deliver_policy=DeliverPolicy.ALL if ours else DeliverPolicy.NEW,
        max_ack_pending=10_000,
    )
    session.pull = await js.pull_subscribe(
        subject="", durable=durable, stream=name, config=consumer
    )
    held = await session.pull.consumer_info()
    session.backlog = int(held.num_pending or 0) + int(held.num_ack_pending or 0)


async def serve(
    session: NatsSession,
    handle: Handle,
    *,
    sync: Callable[[], None] = lambda: None,
    batch: int = 100,
) -> str:
    """Hand every message to ``handle`` in order until the connection closes. JetStream
    messages are acked only after ``handle`` took them and ``sync`` put their events on disk
    (once per fetched batch: group commit); a crash before that redelivers them."""
    if session.pull is not None:
        while not session.closed.is_set():
            try:
                messages = await _fetch(session.pull, batch)
            except (NatsTimeout, TimeoutError):  # nothing new within the second (both kinds)
                continue
            except Exception as exc:
                if session.closed.is_set() or session.nc.is_closed:
                    break
                return f"JetStream fetch failed: {type(exc).__name__}: {exc}"
            for msg in messages:
                await handle(msg.data, _position(msg))
            sync()
            for msg in messages:
                with contextlib.suppress(Exception):  # unacked: redelivered, dropped as duplicate
                    await msg.ack()
        return session.reason
    while True:
        drained = 0
        while not session.queue.empty():  # what is queued already: no task per message
            await handle(session.queue.get_nowait().data, None)
            drained += 1
            if drained % DRAIN_YIELD_EVERY == 0:
                await asyncio.sleep(0)  # the other links run (and the spool commits this turn)
        if session.closed.is_set():
            return session.reason
        getter = asyncio.ensure_future(session.queue.get())
        closer = asyncio.ensure_future(session.closed.wait())
        try:
            await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closer.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            await handle(getter.result().data, None)
        elif session.closed.is_set():
            return session.reason


async def _fetch(pull: JetStreamContext.PullSubscription, batch: int) -> list[Msg]:
    """``pull.fetch`` in a task of its own, so that a stop is never lost: nats-py waits for each
    message with ``asyncio.wait_for``, which on Python 3.11 returns a message that arrives as it
    is cancelled instead of raising (the link then read on forever and the gateway never
    stopped). ``asyncio.wait`` always raises; what the abandoned fetch took is not acked and is
    delivered again."""
    fetching = asyncio.ensure_future(pull.fetch(batch, timeout=1.0))
    try:
        await asyncio.wait({fetching})
    except asyncio.CancelledError:
        fetching.cancel()
        fetching.add_done_callback(_retrieve)
        raise
    return fetching.result()


def _retrieve(task: asyncio.Future[list[Msg]]) -> None:
    if not task.cancelled():
        task.exception()  # an abandoned fetch's error is of no interest (and not "never retrieved")


def _position(msg: Msg) -> str | None:
    try:
        meta = msg.metadata
    except Exception:  # not a JetStream message
        return None
    return f"{meta.stream}:{meta.sequence.stream}"


async def delete_stream(pbx: XSwitchPbxSettings) -> None:
    """Remove the link's stream (and its consumer): for tests and for operators leaving it."""
    nc = await connect(pbx)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(pbx.stream_name())
    finally:
        await nc.close()
