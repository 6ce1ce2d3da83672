"""structlog, configured once: console in development, JSON lines otherwise, secrets redacted.

Context (``request_id``, ``job_id``, ``account_id``…) is bound with ``structlog.contextvars`` so every event
of a request or job carries it without passing loggers around.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"

# Key names whose values are secrets whatever they look like.
_SECRET_KEY_RE = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|apikey|authorization|auth_header|cookie|credential|private[_-]?key|"
    r"fernet|signature)",
    re.IGNORECASE,
)
# Keys that contain a secret-looking word but hold no secret.
_SAFE_KEYS = frozenset(
    {"token_expires_at", "token_type", "needs_reauth", "webhook_url", "auth_url", "tokens_refreshed"}
)

# Secret-looking substrings inside free text.
_VALUE_PATTERNS = [
    re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        r"(?i)\b(api_key|apikey|token|access_token|refresh_token|client_secret|secret|password|code)=([^&\s]+)"
    ),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"\bgAAAAA[A-Za-z0-9_-]{20,}={0,2}"),  # Fernet tokens (our ciphertexts)
    re.compile(r"\bdef50200[0-9a-f]{16,}\b"),  # Kommo refresh tokens / codes
]

# Secrets seen at run time (decrypted tokens, API keys): a bounded cache, emptied when full.
_known_secrets: set[str] = set()
# The process's own configuration secrets (admin token, encryption keys): few, and never evicted.
_pinned_secrets: set[str] = set()
_known_lock = threading.Lock()
_MAX_KNOWN = 10_000


def register_secret(value: str | None, *, pinned: bool = False) -> None:
    """Remember a secret value so any log line containing it is redacted.

    ``pinned`` is for configuration secrets, which must stay redacted however many tokens are seen later.
    """
    if not value or len(value) < 6:
        return
    with _known_lock:
        if pinned:
            _pinned_secrets.add(value)
            return
        if len(_known_secrets) >= _MAX_KNOWN:
            _known_secrets.clear()
        _known_secrets.add(value)


def redact_text(text: str) -> str:
    # Known values before patterns, and the longest first, so that neither a pattern nor a shorter secret
    # inside a longer one can mask part of a secret and leave the rest readable.
    with _known_lock:
        known = [*_pinned_secrets, *_known_secrets]
    for secret in sorted((s for s in known if s in text), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _VALUE_PATTERNS:
        text = pattern.sub(_mask_match, text)
    return text


def _mask_match(match: re.Match[str]) -> str:
    if match.lastindex and match.lastindex >= 2:
        return f"{match.group(1)}={REDACTED}"
    if match.lastindex == 1:
        return f"{match.group(1)} {REDACTED}"
    return REDACTED


def _redact_value(key: str | None, value: Any, depth: int = 0) -> Any:
    if key is not None and key not in _SAFE_KEYS and _SECRET_KEY_RE.search(key):
        return REDACTED if value not in (None, "", False) else value
    if depth > 4:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(None, v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        return redact_text(repr(value))
    return value


# Left for the exception formatter: stringifying ``exc_info`` here would lose its traceback.
_FORMATTED_LATER = frozenset({"exc_info"})


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named keys and secret-looking values anywhere in the event."""
    for key in list(event_dict.keys()):
        if key in _FORMATTED_LATER:
            continue
        event_dict[key] = _redact_value(key if key != "event" else None, event_dict[key])
    return event_dict


def _redact_rendered_exception(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Tracebacks and stacks are text only once formatted, after ``redact_secrets`` ran: scrub them here.
    for key in ("exception", "stack"):
        text = event_dict.get(key)
        if isinstance(text, str):
            event_dict[key] = redact_text(text)
    return event_dict


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (test runners and daemons swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


_configured = False


def configure_logging(*, fmt: str = "console", level: str = "INFO", force: bool = False) -> None:
    """Configure structlog and route stdlib logging (uvicorn, arq, sqlalchemy) through the same renderer."""
    global _configured
    if _configured and not force:
        return
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        # The console renderer would draw exc_info itself, with rich and its table of local variables when
        # rich is installed (tokens, keys and ciphertexts in every frame). Both renderers get the exception
        # already formatted as a plain traceback (no locals) and redacted; plain_traceback is only a fallback.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    final = [structlog.processors.format_exc_info, _redact_rendered_exception, renderer]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "arq", "arq.worker", "arq.jobs"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    # httpx logs full URLs at INFO (Unisender puts api_key in query strings of GET calls): keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    _configured = True
