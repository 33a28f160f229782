"""The HTTP endpoints. Every body is JSON (UTF-8) except /metrics, / and the export.

Request handling order is fixed in ``serve.app`` (request id, auth, size); handlers
here parse with ``serve.validation`` and never let bad input reach a 500.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from flask import Blueprint, Response, current_app, request

from serve.errors import ApiError, ticket_error
from serve.logs import log_text
from serve.validation import (has_surrogates, json_type, optional_text, parse_time, read_json,
                              require_object, ticket_fields)
from triage.errors import InvalidTicketError

log = logging.getLogger("triage.serve")
bp = Blueprint("api", __name__)

# endpoint -> scope it needs (anything not listed needs "score"; OPEN_ENDPOINTS need none)
ADMIN_ENDPOINTS = frozenset({"api.reload", "api.feedback_export"})
RECEIVED_AT_YEARS = (1900, 2999)


def service():
    return current_app.extensions["triage"]


def respond(body, status: int = 200, headers: dict | None = None) -> Response:
    """A JSON response (UTF-8, not ASCII-escaped; lone surrogates fall back to escapes)."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = json.dumps(body, separators=(",", ":")).encode("ascii")
    resp = Response(data, status=status, mimetype="application/json")
    resp.headers["Content-Type"] = "application/json; charset=utf-8"
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


# -- probes ---------------------------------------------------------------------------
@bp.get("/healthz")
def healthz():
    """Alive: the process answers."""
    return respond({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready: a model is loaded and has made its warm-up prediction."""
    holder = service().holder
    state = holder.current
    if state is None or not state.warm:
        return respond({"error": {"code": "not_ready", "message": "no warm model loaded"}}, 503)
    return respond({"status": "ready", "model_version": state.version, "generation": state.generation})


@bp.get("/metrics")
def metrics():
    data, content_type = service().metrics.exposition()
    return Response(data, status=200, headers={"Content-Type": content_type})


# -- documents ----------------------------------------------------------------------
@bp.get("/openapi.json")
def openapi():
    from serve.openapi import build_openapi

    return respond(build_openapi(service().config))


@bp.get("/")
def console():
    page = service().console
    resp = Response(page.html, status=200, mimetype="text/html")
    resp.headers["Content-Type"] = "text/html; charset=utf-8"
    resp.headers["Content-Security-Policy"] = page.csp
    resp.headers["Cache-Control"] = "no-cache"
    return resp


# -- scoring --------------------------------------------------------------------------
def _check_received_at(ticket: dict, path: str) -> None:
    """Refuse receipt times the calendar cannot compute a due time for."""
    value = ticket.get("received_at")
    if not isinstance(value, str):
        return
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return  # the model reports it with its own code
    lo, hi = RECEIVED_AT_YEARS
    if not lo <= parsed.year <= hi:
        field = f"{path}.received_at" if path else "received_at"
        raise ApiError(422, "bad_received_at", f"received_at must be a time between the years {lo} and {hi}", field)


def _prepare(obj, path: str):
    """A ticket dict ready for the model, or the ApiError for it."""
    if not isinstance(obj, dict):
        return ApiError(400, "bad_type", f"a ticket must be a JSON object, not {json_type(obj)}", path)
    try:
        ticket = ticket_fields(obj, path)
        _check_received_at(ticket, path)
    except ApiError as exc:
        return exc
    return ticket


def _score(model, tickets: list) -> list:
    """``score_batch`` with errors returned; one unexpected failure is isolated to its ticket."""
    try:
        return model.score_batch(tickets, errors="return")
    except Exception:
        log.exception("batch scoring failed; scoring tickets one by one")
    out = []
    for ticket in tickets:
        try:
            out.append(model.score_batch([ticket], errors="return")[0])
        except Exception as exc:
            log.exception("ticket scoring failed")
            out.append(InvalidTicketError(f"this ticket could not be scored ({type(exc).__name__})",
                                          code="internal_error", field=""))
    return out


@bp.post("/v1/score")
def score():
    svc = service()
    body = require_object(read_json(request, svc.config.max_body_bytes))
    ticket = _prepare(body, "")
    if isinstance(ticket, ApiError):
        svc.metrics.ticket_errors.labels(ticket.code).inc()
        raise ticket
    log_text(log, "score ticket", ticket.get("text"), ticket_id=str(ticket.get("id")))
    state = svc.holder.current
    result = _score(state.model, [ticket])[0]
    svc.metrics.observe_results([result])
    if isinstance(result, InvalidTicketError):
        err = ticket_error(result)
        if result.code == "internal_error":
            err.status = 500
        raise err
    return respond(result.to_dict())


@bp.post("/v1/score/batch")
def score_batch():
    svc = service()
    body = require_object(read_json(request, svc.config.max_body_bytes))
    if "tickets" not in body:
        raise ApiError(400, "missing_field", "the body needs a 'tickets' array", "tickets")
    tickets = body["tickets"]
    if not isinstance(tickets, list):
        raise ApiError(400, "bad_type", f"tickets must be an array, not {json_type(tickets)}", "tickets")
    if len(tickets) > svc.config.max_batch:
        raise ApiError(413, "batch_too_large",
                       f"{len(tickets)} tickets; the limit is {svc.config.max_batch} per request", "tickets")
    prepared = [_prepare(obj, f"tickets[{i}]") for i, obj in enumerate(tickets)]
    good = [(i, t) for i, t in enumerate(prepared) if not isinstance(t, ApiError)]
    for i, t in good:
        log_text(log, "score ticket", t.get("text"), index=i, ticket_id=str(t.get("id")))
    state = svc.holder.current
    scored = _score(state.model, [t for _, t in good]) if good else []
    svc.metrics.observe_results(scored)
    results: list = [None] * len(tickets)
    for (i, _), res in zip(good, scored):
        if isinstance(res, InvalidTicketError):
            err = ticket_error(res, f"tickets[{i}]")
            results[i] = _item_error(i, tickets[i], err)
        else:
            results[i] = res.to_dict()
    for i, t in enumerate(prepared):
        if isinstance(t, ApiError):
            svc.metrics.ticket_errors.labels(t.code).inc()
            results[i] = _item_error(i, tickets[i], t)
    return respond({"results": results, "model_version": state.version})


def _item_error(index: int, obj, err: ApiError) -> dict:
    ident = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(ident, bool) or not isinstance(ident, (str, int)) or \
            (isinstance(ident, str) and (len(ident) > 200 or has_surrogates(ident))):
        ident = None
    return {"index": index, "id": None if ident is None else str(ident), **err.body()}


# -- model ----------------------------------------------------------------------------
BULKY = ("confusion", "baselines")


def _slim(value):
    if isinstance(value, dict):
        return {k: _slim(v) for k, v in value.items() if k not in BULKY}
    if isinstance(value, list):
        return [_slim(v) for v in value]
    return value


@bp.get("/v1/model")
def model_info():
    svc = service()
    state = svc.holder.current
    manifest = _slim(state.model.manifest)
    manifest["label_names"] = svc.label_names(state.model)
    featurizer = getattr(state.model, "featurizer", None)
    manifest["service"] = {"generation": state.generation, "loaded_at": state.loaded_at,
                           "max_chars": state.model.max_chars, "max_batch": svc.config.max_batch,
                           "max_body_bytes": svc.config.max_body_bytes,
                           "featurizer": None if featurizer is None else "compiled" if featurizer.compiled else "numpy"}
    return respond(manifest)


@bp.post("/v1/admin/reload")
def reload():
    svc = service()
    body = require_object(read_json(request, svc.config.max_body_bytes))
    path = body.get("path")
    if path is None:
        raise ApiError(400, "missing_field", "the body needs the bundle 'path'", "path")
    if not isinstance(path, str) or not path.strip() or has_surrogates(path) or "\x00" in path:
        raise ApiError(400, "bad_type", "path must be a non-empty string", "path")
    before = svc.holder.current.version
    status, result = svc.holder.reload(path)
    log.info("model reloaded", extra={"fields": {"from": before, "to": result["model_version"],
                                                 "generation": result["generation"],
                                                 "propagated": result["propagated"]}})
    return respond(result, status)


# -- feedback -------------------------------------------------------------------------
@bp.post("/v1/feedback")
def feedback():
    from serve.feedback import MAX_ID, MAX_LABEL, MAX_NAME, Feedback

    svc = service()
    body = require_object(read_json(request, svc.config.max_body_bytes))
    model = svc.holder.current.model
    ticket_id = body.get("ticket_id")
    if ticket_id is None:
        raise ApiError(400, "missing_field", "feedback needs the 'ticket_id' it is about", "ticket_id")
    if isinstance(ticket_id, bool) or not isinstance(ticket_id, (str, int)):
        raise ApiError(400, "bad_type", f"ticket_id must be a string or an integer, not {json_type(ticket_id)}",
                       "ticket_id")
    ticket_id = str(ticket_id)
    if not ticket_id.strip() or len(ticket_id) > MAX_ID or has_surrogates(ticket_id):
        raise ApiError(422, "bad_ticket_id", f"ticket_id must be 1 to {MAX_ID} characters of text", "ticket_id")
    labels = body.get("labels")
    if labels is None:
        raise ApiError(400, "missing_field", "feedback needs 'labels': {head: label}", "labels")
    if not isinstance(labels, dict):
        raise ApiError(400, "bad_type", f"labels must be an object, not {json_type(labels)}", "labels")
    if not labels:
        raise ApiError(422, "no_labels", "labels must name at least one head", "labels")
    known = model.labels
    for head, label in labels.items():
        if head not in known:
            raise ApiError(422, "unknown_head", f"the model has no head {head[:64]!r}; heads are "
                           f"{', '.join(known)}", f"labels.{head}" if len(head) <= 64 else "labels")
        if not isinstance(label, str):
            raise ApiError(400, "bad_type", f"labels.{head} must be a string, not {json_type(label)}",
                           f"labels.{head}")
        if label not in known[head] or len(label) > MAX_LABEL:
            raise ApiError(422, "unknown_label", f"{label[:64]!r} is not a {head} label of the model",
                           f"labels.{head}")
    agent = optional_text(body, "agent", MAX_NAME)
    model_version = optional_text(body, "model_version", MAX_NAME)
    text = optional_text(body, "text", model.max_chars)
    tz = model.calendar.timezone
    decided_at = parse_time(body.get("decided_at"), "decided_at", default_tz=tz)
    log_text(log, "feedback text", text, ticket_id=ticket_id)
    fb = Feedback(ticket_id=ticket_id, labels=dict(labels), agent=agent, decided_at=decided_at, text=text,
                  model_version=model_version)
    stored = svc.store_feedback(fb)
    for head in labels:
        svc.metrics.feedback.labels(head).inc()
    return respond({"ticket_id": ticket_id, "stored": stored, "text_stored": text is not None})


@bp.get("/v1/feedback/export")
def feedback_export():
    svc = service()
    flag = request.args.get("require_text", "false").lower()
    if flag not in ("true", "false", "1", "0"):
        raise ApiError(400, "bad_type", "require_text must be true or false", "require_text")
    rows = svc.feedback_rows(require_text=flag in ("true", "1"))
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    return Response(data, status=200, headers={"Content-Type": "application/x-ndjson; charset=utf-8",
                                               "Content-Disposition": 'attachment; filename="feedback.jsonl"'})
