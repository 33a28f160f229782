"""Reading and checking request bodies, before anything reaches the model.

Order: size (Content-Length against the limit before reading; a chunked body is
read only up to the limit, then refused), content type (``application/json``
or ``application/*+json``, charset UTF-8 if given: else 415), UTF-8 (400
``bad_encoding``), JSON (400 ``bad_json``; NaN/Infinity refused; nesting deeper than ``MAX_DEPTH``
400 ``too_deep``), then per-endpoint shape with the field path of
the first problem (400 ``bad_type`` / ``missing_field``, 422 for bad values).

Unknown fields are ignored everywhere (top level, tickets, feedback), so clients may
send extra data; they are never echoed back or stored.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from flask import Request

from serve.errors import ApiError

MAX_DEPTH = 32
_JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$", re.I)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def read_json(request: Request, max_bytes: int) -> Any:
    """The parsed JSON body of ``request``, or an ApiError that says what is wrong."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "payload_too_large",
                       f"the request body is larger than the limit of {max_bytes} bytes")
    mimetype = (request.mimetype or "").strip()
    if not _JSON_TYPE.match(mimetype):
        shown = mimetype or "none"
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json (got {shown})")
    charset = request.mimetype_params.get("charset")
    if charset and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type", f"the body must be UTF-8, not {charset}")
    raw = read_body(request, max_bytes)
    if not raw.strip():
        raise ApiError(400, "bad_json", "the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_encoding", f"the body is not valid UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "bad_json", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        value = None
        too_deep = True
    except ValueError as exc:  # NaN/Infinity, integers of more than 4300 digits
        raise ApiError(400, "bad_json", f"malformed JSON: {exc}") from None
    else:
        too_deep = json_depth(value) > MAX_DEPTH
    if too_deep:
        raise ApiError(400, "too_deep", f"JSON nesting deeper than {MAX_DEPTH} levels")
    return value


def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, never more than ``max_bytes`` of it read (chunked bodies included)."""
    if request.content_length is not None:
        return request.get_data(cache=False)  # at most Content-Length, already checked
    if not request.environ.get("wsgi.input_terminated"):
        return b""  # neither a length nor a server-delimited stream: HTTP says no body
    stream = request.environ["wsgi.input"]
    parts, total = [], 0
    while True:
        block = stream.read(min(65536, max_bytes + 1 - total))
        if not block:
            return b"".join(parts)
        parts.append(block)
        total += len(block)
        if total > max_bytes:
            raise ApiError(413, "payload_too_large",
                           f"the request body is larger than the limit of {max_bytes} bytes")


def json_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a parsed JSON value; stops counting once past ``limit``."""
    best = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > best:
            best = depth
            if best > limit:
                return best
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return best


def require_object(value: Any, path: str = "") -> dict:
    if not isinstance(value, dict):
        where = f"{path} " if path else "the body "
        raise ApiError(400, "bad_type", f"{where}must be a JSON object, not {json_type(value)}", path or "")
    return value


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def has_surrogates(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def ticket_fields(obj: dict, path: str = "") -> dict:
    """Check the types of a ticket's optional fields that the model does not (bool ids, surrogates).

    Returns the ticket with only the known fields; raises ApiError with the field path.
    """
    def where(name: str) -> str:
        return f"{path}.{name}" if path else name

    ident = obj.get("id")
    if ident is not None:
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise ApiError(400, "bad_type", f"id must be a string or an integer, not {json_type(ident)}", where("id"))
        if isinstance(ident, str) and (len(ident) > 200 or has_surrogates(ident)):
            raise ApiError(400, "bad_type", "id must be valid text of at most 200 characters", where("id"))
    for name in ("channel", "received_at"):
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, "bad_type", f"{name} must be a string, not {json_type(value)}", where(name))
        if isinstance(value, str) and (len(value) > 200 or has_surrogates(value)):
            raise ApiError(400, "bad_type", f"{name} must be valid text of at most 200 characters", where(name))
    return {k: obj[k] for k in ("id", "text", "received_at", "channel") if k in obj}


def parse_time(value: Any, path: str, default_tz: str = "UTC") -> dt.datetime | None:
    """An optional ISO 8601 time; a naive one is taken in ``default_tz``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "bad_type", f"{path} must be an ISO 8601 string, not {json_type(value)}", path)
    if len(value) > 64 or has_surrogates(value):
        raise ApiError(422, "bad_time", f"{path} is not an ISO 8601 time", path)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, "bad_time", f"{path} is not an ISO 8601 time", path) from None
    if not 1900 <= parsed.year <= 2999:
        raise ApiError(422, "bad_time", f"{path} must be between the years 1900 and 2999", path)
    if parsed.tzinfo is None:
        from zoneinfo import ZoneInfo

        parsed = parsed.replace(tzinfo=ZoneInfo(default_tz))
    return parsed


def optional_text(obj: dict, name: str, limit: int) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "bad_type", f"{name} must be a string, not {json_type(value)}", name)
    if has_surrogates(value):
        raise ApiError(400, "bad_encoding", f"{name} contains unpaired surrogates", name)
    if len(value) > limit:
        raise ApiError(413 if name == "text" else 400, "text_too_long" if name == "text" else "bad_type",
                       f"{name} has {len(value)} characters; the limit is {limit}", name)
    return value
