"""structlog set-up: one JSON object (or readable console line) per log line, with contextvars."""

from __future__ import annotations

import logging
import re
import sys
from collections import deque
from typing import Any

import structlog
from structlog.typing import Processor

_SECRET_KEYS = frozenset(
    {"password", "client_secret", "secret", "access_token", "refresh_token", "token"}
)


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: a secret passed by mistake never reaches the output."""
    for key in _SECRET_KEYS.intersection(event):
        event[key] = "***"
    return event


#: The last warnings and errors, newest last, for the status page (secrets already redacted).
RECENT_PROBLEMS: deque[dict[str, Any]] = deque(maxlen=20)
_URL_PASSWORD = re.compile(r"//([^:@/\s]+):[^@/\s]*@")
_SHOWN_KEYS = ("timestamp", "level", "event", "logger", "tenant", "vendor", "worker")


def _remember(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Keep warnings and errors for the status page: the event, where, and one line of detail
    (URL passwords masked, bounded), never a traceback."""
    if method in ("warning", "error", "critical", "exception") or event.get("level") in (
        "warning",
        "error",
        "critical",
    ):
        shown = {k: event[k] for k in _SHOWN_KEYS if k in event}
        shown["level"] = event.get("level", method)
        detail = " ".join(
            f"{k}={v}"
            for k, v in event.items()
            if k not in _SHOWN_KEYS
            and k not in ("exc_info", "stack_info", "_record", "_from_structlog")
        )
        shown["detail"] = _URL_PASSWORD.sub(r"//\1:***@", detail)[:300]
        shown["event"] = _URL_PASSWORD.sub(r"//\1:***@", str(shown.get("event", "")))[:300]
        RECENT_PROBLEMS.append(shown)
    return event


#: Libraries whose own failure lines the gateway already reports as one structured warning.
_QUIET = {"aiormq": logging.CRITICAL, "aio_pika": logging.ERROR, "websockets": logging.ERROR}
#: aio-pika's robust objects log a failed step of their recovery as an error although they try it
#: again (a channel restored while its connection drops again, a reconnect whose restore of a
#: channel failed): the next reconnect restores them. Warnings, not errors nobody handled.
_RETRIED = (
    "RobustChannel._on_close",  # a channel's restore after its close
    "Reconnect attempt failed",  # retried after reconnect_interval
)


class _RetriedRecovery(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and any(
            marker in str(record.msg) or marker in record.getMessage() for marker in _RETRIED
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_RETRIED_FILTER = _RetriedRecovery()


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    exc: Processor
    if fmt == "json":
        exc = structlog.processors.format_exc_info
    else:
        exc = structlog.dev.set_exc_info
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        _remember,
    ]
    # Library records (stdlib logging) come out in the same format, one line each.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, exc],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, logging.getLevelNamesMapping()[level]))
    for name in ("aio_pika.tools", "aio_pika.robust_connection"):  # (filters are per logger)
        library = logging.getLogger(name)
        if _RETRIED_FILTER not in library.filters:
            library.addFilter(_RETRIED_FILTER)
    structlog.configure(
        processors=[*shared, exc, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
