"""Structured JSON logs with secrets redacted by a processor, not by discipline.

``configure_logging()`` once at start; ``get_logger(__name__)`` everywhere. The redaction
masks values under secret-looking keys (``accessToken``, ``password``, ``p-ticket``, ...),
also where such a pair is written inside a string (``access_token=...`` in URLs,
``'accessToken': '...'`` in a repr), and values that have a token's shape anywhere (JWTs,
``Bearer ...``), however deeply nested. Dotted names (logger names, module paths, hostnames,
versions) are not secrets and pass untouched. ``redact()`` is public so that the broker-call
audit uses the same rules before anything is stored.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import FilteringBoundLogger

MASK = "***"

# Compared after lower-casing and dropping "-" and "_", so accessToken, access_token and
# ACCESS-TOKEN are one entry.
SECRET_KEYS: frozenset[str] = frozenset(
    {
        "accesstoken",
        "mdaccesstoken",
        "refreshtoken",
        "token",
        "password",
        "passwd",
        "sec",
        "secret",
        "clientsecret",
        "apikey",
        "authorization",
        "proxyauthorization",
        "cookie",
        "setcookie",
        "pticket",
        "ticket",
    }
)

# A JWT (RFC 7519 compact form): three base64url segments, the first a JSON header, so it
# always starts with "eyJ" (base64 of '{"'). Matching any three dotted words instead would
# mask logger names, module paths and hostnames.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"\b(Bearer)\s+[^\s\"',;]+", re.IGNORECASE)
# key=value (query strings, headers) or 'key': 'value' (reprs, JSON) inside a string, for
# the keys of SECRET_KEYS spelt with or without "-"/"_" (access_token, accessToken, p-ticket).
# A value already masked, or a Bearer scheme (masked above), is left alone.
_SECRET_KEY_TEXT = "|".join(
    "[-_]?".join(map(re.escape, key)) for key in sorted(SECRET_KEYS, key=len, reverse=True)
)
_SECRET_PAIR = re.compile(
    rf"""(?<![\w-])(?P<key>(?:{_SECRET_KEY_TEXT}))(?P<sep>["']?\s*[=:]\s*["']?)"""
    r"""(?!\*\*\*|Bearer\s)(?:(?<=")[^"]+|(?<=')[^']+|[^\s"'&,;{}\[\]]+)""",
    re.IGNORECASE,
)


# Text that none of the patterns above can match passes untouched after a few substring
# tests: case-folded and without "-" and "_", it holds no JWT start, no "bearer" and no
# secret key's name (most values: ids, enums, timestamps). Cheaper than any regex search.
_NEEDLES = ("eyj", "bearer", *sorted(SECRET_KEYS))
# The shortest text a pattern masks: "sec=x".
_SHORTEST_SECRET = 5
# Keys seen before and whether each names a secret (JSON answers repeat a few keys).
_KEYS: dict[str, bool] = {}
_KEYS_KEPT = 4096
# Leaves returned as they are (exact types: a str subclass is still searched).
_PLAIN_TYPES = frozenset({int, float, bool, type(None)})


def is_secret_key(key: object) -> bool:
    """Return whether a mapping key names a secret."""
    if not isinstance(key, str):
        return False
    known = _KEYS.get(key)
    if known is None:
        known = key.lower().replace("-", "").replace("_", "") in SECRET_KEYS
        if len(_KEYS) < _KEYS_KEPT:
            _KEYS[key] = known
    return known


def redact_text(text: str) -> str:
    """Mask JWTs, bearer tokens and values of secret keys (``token=...``) inside a string."""
    if len(text) < _SHORTEST_SECRET:
        return text
    flat = text.casefold().replace("-", "").replace("_", "")
    if not any(map(flat.__contains__, _NEEDLES)):
        return text
    text = _BEARER.sub(rf"\1 {MASK}", text)
    text = _JWT.sub(MASK, text)
    return _SECRET_PAIR.sub(rf"\g<key>\g<sep>{MASK}", text)


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (``scheme://user:***@host``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user, has_password, _ = credentials.partition(":")
    return f"{scheme}://{user}{':' + MASK if has_password else ''}@{host}"


def redact(value: Any) -> Any:
    """Return a copy of ``value`` with secrets masked by key name and by value shape."""
    if type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        # Inlined for the common leaves: a 200-order answer holds thousands of them.
        out = {}
        for k, v in value.items():
            secret = _KEYS.get(k) if type(k) is str else False
            if secret is None:
                secret = is_secret_key(k)
            if secret and v not in (None, ""):
                out[k] = MASK
            elif type(v) in _PLAIN_TYPES:
                out[k] = v
            else:
                out[k] = redact(v)
        return out
    if isinstance(value, list | tuple):
        return [v if type(v) in _PLAIN_TYPES else redact(v) for v in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask secrets in a structlog event (a processor; runs last before rendering)."""
    return {
        key: (MASK if is_secret_key(key) else redact(value)) for key, value in event_dict.items()
    }


def _render_exception_then_redact(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Tracebacks carry exception messages; render them first so the redaction sees them.
    return redact_processor(
        logger, method, structlog.processors.format_exc_info(logger, method, event_dict)
    )


# The context of the row a line is about, bound on the order path (``order_context``): every
# line logged meanwhile, ours or a library's, carries them.
ORDER_KEYS = ("signal_id", "client_order_id", "broker_order_id", "account")


@contextlib.contextmanager
def order_context(**ids: str | None) -> Iterator[None]:
    """Bind the ids of the row at hand (``ORDER_KEYS``; ``None`` values are skipped) to every
    line logged inside, in this task and the tasks it starts; restore them on exit."""
    before = structlog.contextvars.get_contextvars()
    structlog.contextvars.bind_contextvars(**{k: v for k, v in ids.items() if v is not None})
    try:
        yield
    finally:
        structlog.contextvars.unbind_contextvars(*ORDER_KEYS)
        kept = {k: before[k] for k in ORDER_KEYS if k in before}
        if kept:
            structlog.contextvars.bind_contextvars(**kept)


def bind_order(**ids: str | None) -> None:
    """Add ids learnt on the way (the broker's order id) to the current ``order_context``."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in ids.items() if v is not None})


def _stdlib_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Give a stdlib record our fields: ``logger_name``, and its stack if it has one."""
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord):
        event_dict.setdefault("logger_name", record.name)
        if record.stack_info:
            event_dict["stack"] = record.stack_info
    return event_dict


def wants_console(stream: TextIO) -> bool:
    """Return whether ``stream`` is a terminal (``logging.json_output`` unset: console)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False


def configure_logging(
    level: str = "INFO", *, json_output: bool | None = True, stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger to write redacted logs, each line
    through the same processors (context, level, time, redaction, rendering).

    ``json_output``: True JSON lines, False the human console format, None JSON unless the
    stream is a terminal (then the console format, in colour).
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    out = stream or sys.stdout
    errors = stream or sys.stderr
    if json_output is None:
        json_output = not wants_console(out)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(default=str)
        if json_output
        else structlog.dev.ConsoleRenderer(colors=wants_console(out))
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, _render_exception_then_redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the stdlib (asyncpg, uvicorn, warnings.warn once captured): their
    # records go through the same processors (the order context of the task that logged them
    # included), so a log collector never meets plain text or a bare traceback.
    handler = logging.StreamHandler(errors)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_stdlib_fields, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _render_exception_then_redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(numeric, logging.INFO))
    # warnings.warn (asyncpg's, ResourceWarning) through the handler; taken over again on each
    # call, as something may have replaced warnings.showwarning since the last.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    # httpx/httpcore log each request at INFO; our own broker_call event already records it
    # (redacted, with latency), so theirs would only double every line.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


def get_logger(name: str | None = None, **bound: Any) -> FilteringBoundLogger:
    """Return a structlog logger, optionally with context bound."""
    if name is not None:
        # Not "logger": structlog.get_logger() reserves that keyword for the wrapped logger.
        bound = {"logger_name": name, **bound}
    # A lazy proxy: loggers made at import time follow a later ``configure_logging``.
    logger: FilteringBoundLogger = structlog.get_logger(**bound)
    return logger
