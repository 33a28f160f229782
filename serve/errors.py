"""JSON error bodies: ``{"error": {"code", "message", "field"?}}`` for every failure.

Status codes: 400 malformed body or wrong types, 401/403 authentication, 404/405
routing, 409 conflicting state, 413 too large (body, batch or text), 415 content
type, 422 well-formed but unacceptable values, 500 a bug (never caused by input).
"""

from __future__ import annotations

import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from triage.errors import InvalidTicketError

log = logging.getLogger("triage.serve")

# model error code -> HTTP status
TICKET_STATUS = {
    "missing_text": 400,
    "bad_type": 400,
    "bad_encoding": 400,
    "bad_received_at": 422,
    "empty_text": 422,
    "text_too_long": 413,
}

HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout", 409: "conflict",
    411: "length_required", 413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
    416: "range_not_satisfiable", 422: "unprocessable", 429: "too_many_requests",
    431: "headers_too_large", 500: "internal_error", 501: "not_implemented", 503: "unavailable",
}


class ApiError(Exception):
    """An error the API reports to the client as it is."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.code, self.message, self.field)


def error_body(code: str, message: str, field: str | None = None) -> dict:
    err = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    return {"error": err}


def ticket_error(exc: InvalidTicketError, prefix: str = "") -> ApiError:
    """An ApiError for a ticket the model refused; ``prefix`` makes the field a full path."""
    field = getattr(exc, "field", "text") or ""
    path = f"{prefix}.{field}" if prefix and field else (prefix or field)
    return ApiError(TICKET_STATUS.get(exc.code, 422), exc.code, str(exc), path)


def register_error_handlers(app: Flask, respond) -> None:
    """Route ApiError, werkzeug HTTP errors and anything unexpected to JSON bodies."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return respond(exc.body(), exc.status, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        if status == 413:
            message = f"the request body is larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes"
        headers = {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)
        return respond(error_body(code, message), status, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"fields": {"error_type": type(exc).__name__}})
        return respond(error_body("internal_error", "internal server error"), 500, {})
