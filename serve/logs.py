"""Structured logs: one JSON object per line, with the request id of the current request.

Log calls pass structured data as ``extra={"fields": {...}}``. Complaint text is only
ever logged PII-masked (``triage.normalize.mask_pii``) and only at DEBUG level; API
keys and request headers are never logged.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
import uuid

from triage.normalize import mask_pii

LOGGER = "triage.serve"
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("triage_request_id", default=None)
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "pid", "request_id"?, ...fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
               "pid": record.process}
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=True, default=str)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def configure_logging(level: str = "INFO", propagate: bool = False) -> logging.Logger:
    """Give the ``triage.serve`` logger one JSON handler (once per process) and a level."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    if not any(getattr(h, "_triage_json", False) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(JsonFormatter())
        handler._triage_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = propagate
    return logger


def gunicorn_logconfig(level: str) -> dict:
    """A ``logging.config.dictConfig`` for gunicorn's own loggers, in the same JSON format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "serve.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "loggers": {
            "gunicorn.error": {"level": level if level != "DEBUG" else "INFO", "handlers": ["stderr"],
                               "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
        "root": {"level": "WARNING", "handlers": ["stderr"]},
    }


def new_request_id(incoming: str | None) -> str:
    """The client's ``X-Request-ID`` if it is short and plain, else a fresh one."""
    if incoming and _SAFE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def log_text(logger: logging.Logger, what: str, text, **fields) -> None:
    """Log a complaint text at DEBUG, PII-masked; does nothing at higher levels."""
    if logger.isEnabledFor(logging.DEBUG) and isinstance(text, str):
        logger.debug(what, extra={"fields": {**fields, "text_masked": mask_pii(text)}})

