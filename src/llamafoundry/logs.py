"""The server's log: one format for every line (ours, uvicorn's, asyncio's), text or JSON, with a timestamp and the
request id of the request a line belongs to. A leaf module: standard library only.

The request id travels in a context variable that the request middleware sets for the request's whole life, so
any line logged while serving it (a refused token, a stream that failed, the access line) carries it without being
passed along.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_configured = {"level": "info", "format": "text"}  # what `configure` set: replicas are started with the same

# Fields of a LogRecord that are not extras a caller passed (`logger.info(..., extra={...})`).
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "request_id"}
# What asyncio logs, bare and repeated, each time a response is written to a client that already left; the access
# line says it once, at debug, with the request id.
_DISCONNECT_NOISE = ("socket.send() raised exception.",)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (the current request's, or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            setattr(record, "request_id", request_id_var.get())  # noqa: B010 (LogRecord declares no such field)
        return True


class DisconnectNoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in _DISCONNECT_NOISE


class TextFormatter(logging.Formatter):
    """`2026-12-06 23:01:02.345 INFO llamafoundry.access [req 9fa3...] POST /chat/completions 200 ...`"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        request_id = getattr(record, "request_id", None)
        request = f" [req {request_id}]" if request_id else ""
        line = f"{stamp} {record.levelname} {record.name}{request}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, request_id, and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        body.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def current_options() -> list[str]:
    """The `serve` options that log as this process does (`--log-level L --log-format F`), for child servers."""
    return ["--log-level", _configured["level"], "--log-format", _configured["format"]]


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send the package's, uvicorn's and asyncio's records to stderr in one format at `level`."""
    if level not in LOG_LEVELS:
        raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(DisconnectNoiseFilter())
    _configured.update(level=level, format=fmt)
    numeric = getattr(logging, level.upper())
    for name in ("llamafoundry", "uvicorn", "uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(numeric if name == "llamafoundry" else max(numeric, logging.INFO))
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # the app writes its own access line (api/access_log)
