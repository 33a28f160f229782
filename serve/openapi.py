"""The OpenAPI 3.1 document served at /openapi.json, built from the running config.

Limits (batch size, body size) and security come from the config, so the document
says what this server actually does. ``tests/test_serve_fuzz.py`` generates requests
from it and checks every response status and body against it.
"""

from __future__ import annotations

from serve.config import Config

HEADS = ("category", "department", "urgency", "sentiment")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict:
    return _json(_ref("Error"), description)


def _schemas(config: Config) -> dict:
    nullable_str = {"type": ["string", "null"]}
    top = {"type": "object", "required": ["label", "probability"],
           "properties": {"label": {"type": "string"}, "probability": {"type": "number", "minimum": 0, "maximum": 1}}}
    head = {"type": "object", "required": ["label", "confidence", "top", "needs_review"],
            "properties": {"label": {"type": "string"},
                           "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                           "top": {"type": "array", "items": top, "maxItems": 3},
                           "needs_review": {"type": "boolean", "description": "confidence below the head's threshold"},
                           "reasons": {"type": "array", "items": {"type": "object"},
                                       "description": "urgency only: model, decision and rule reasons; rule "
                                                      "reasons carry evidence {text, start, end} (code-point "
                                                      "offsets into the submitted text)"}}}
    evidence = {"type": "object", "required": ["rule_id", "text", "start", "end"],
                "properties": {"rule_id": {"type": "string"}, "text": {"type": "string"},
                               "start": {"type": "integer", "minimum": 0}, "end": {"type": "integer", "minimum": 0}}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "description": "stable machine-readable code"},
                           "message": {"type": "string"},
                           "field": {"type": "string", "description": "path of the offending field, "
                                                                     "e.g. tickets[3].text"}}}}},
        "Ticket": {"type": "object", "required": ["text"], "additionalProperties": True,
                   "description": "Unknown fields are ignored.",
                   "properties": {
                       "id": {"type": ["string", "integer"], "maxLength": 200},
                       "text": {"type": "string", "minLength": 1,
                                "description": "the complaint; at most the model's max_chars characters "
                                               "(GET /v1/model service.max_chars): longer is 413 text_too_long, "
                                               "blank is 422 empty_text"},
                       "received_at": {"type": "string", "format": "date-time", "maxLength": 200,
                                       "description": "ISO 8601, years 1900-2999; naive times are in the "
                                                      "model's calendar time zone; default now"},
                       "channel": {"type": "string", "maxLength": 200}}},
        "HeadPrediction": head,
        "Evidence": evidence,
        "TriageResult": {
            "type": "object", "additionalProperties": True,
            "required": ["id", "escalation", "needs_review", "review_reasons", "received_at", "due_at",
                         "model_version"],
            "description": "One HeadPrediction property per model head (usually the four listed).",
            "properties": {
                "id": nullable_str, **{h: _ref("HeadPrediction") for h in HEADS},
                "escalation": {"type": "array", "items": {
                    "type": "object", "required": ["flag", "evidence"],
                    "properties": {"flag": {"type": "string"}, "evidence": {"type": "array", "items": evidence}}}},
                "needs_review": {"type": "boolean"},
                "review_reasons": {"type": "array", "items": {"type": "string"}},
                "received_at": {"type": ["string", "null"], "format": "date-time"},
                "due_at": {"type": ["string", "null"], "format": "date-time"},
                "model_version": {"type": "string"}}},
        "ItemError": {"type": "object", "required": ["index", "id", "error"],
                      "properties": {"index": {"type": "integer", "minimum": 0}, "id": nullable_str,
                                     "error": {"type": "object", "required": ["code", "message"],
                                               "properties": {"code": {"type": "string"},
                                                              "message": {"type": "string"},
                                                              "field": {"type": "string"}}}}},
        "BatchRequest": {"type": "object", "required": ["tickets"], "additionalProperties": True,
                         "properties": {"tickets": {"type": "array", "maxItems": config.max_batch,
                                                    "items": _ref("Ticket")}}},
        "BatchResponse": {"type": "object", "required": ["results", "model_version"],
                          "properties": {"results": {"type": "array", "items": {
                              "oneOf": [_ref("TriageResult"), _ref("ItemError")]}},
                              "model_version": {"type": "string"}}},
        "FeedbackRequest": {
            "type": "object", "required": ["ticket_id", "labels"], "additionalProperties": True,
            "properties": {
                "ticket_id": {"type": ["string", "integer"], "minLength": 1, "maxLength": 200},
                "labels": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"},
                           "description": "head -> final label; heads and labels must be the model's"},
                "agent": {"type": "string", "maxLength": 200},
                "decided_at": {"type": "string", "format": "date-time", "maxLength": 64,
                               "description": "when the agent decided (default now); an older decision "
                                              "never replaces a newer one"},
                "text": {"type": "string", "description": "the ticket text, stored as sent (unmasked) "
                                                          "for retraining"},
                "model_version": {"type": "string", "maxLength": 200}}},
        "FeedbackResponse": {
            "type": "object", "required": ["ticket_id", "stored", "text_stored"],
            "properties": {"ticket_id": {"type": "string"}, "text_stored": {"type": "boolean"},
                           "stored": {"type": "object", "additionalProperties": {
                               "type": "object", "required": ["label", "agent", "decided_at"],
                               "properties": {"label": {"type": "string"}, "agent": nullable_str,
                                              "decided_at": {"type": "string", "format": "date-time"}}}}}},
        "Model": {"type": "object", "required": ["model_version", "heads", "label_names", "service"],
                  "additionalProperties": True,
                  "properties": {"model_version": {"type": "string"}, "heads": {"type": "object"},
                                 "metrics": {"type": "object"}, "label_names": {"type": "object"},
                                 "service": {"type": "object", "required": ["generation", "max_chars",
                                                                            "max_batch", "max_body_bytes"],
                                             "properties": {"generation": {"type": "integer"},
                                                            "loaded_at": {"type": "string"},
                                                            "max_chars": {"type": "integer"},
                                                            "max_batch": {"type": "integer"},
                                                            "max_body_bytes": {"type": "integer"},
                                                            "featurizer": {
                                                                "type": ["string", "null"],
                                                                "enum": ["compiled", "numpy", None],
                                                                "description": "how single tickets are featurised "
                                                                               "(null for the transformer tier)"}}}}},
        "ReloadRequest": {"type": "object", "required": ["path"], "additionalProperties": True,
                          "properties": {"path": {"type": "string", "minLength": 1,
                                                  "description": "bundle directory on the server"}}},
        "ReloadResponse": {
            "type": "object",
            "required": ["model_version", "previous_version", "generation", "path", "propagated", "workers",
                         "seconds"],
            "properties": {"model_version": {"type": "string"}, "previous_version": {"type": "string"},
                           "generation": {"type": "integer"}, "path": {"type": "string"},
                           "propagated": {"type": "boolean"}, "seconds": {"type": "number"},
                           "workers": {"type": "object", "required": ["live", "switched"],
                                       "properties": {"live": {"type": "integer"},
                                                      "switched": {"type": "integer"}}}}},
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "Ready": {"type": "object", "required": ["status", "model_version", "generation"],
                  "properties": {"status": {"type": "string"}, "model_version": {"type": "string"},
                                 "generation": {"type": "integer"}}},
    }


def build_openapi(config: Config) -> dict:
    """The document for a server running with ``config``."""
    auth = config.auth_enabled
    secured = [{"ApiKey": []}, {"Bearer": []}, {"Basic": []}] if auth else []
    common = {
        "400": _err("malformed JSON (bad_json, bad_encoding, too_deep) or wrong types (bad_type, "
                    "missing_field, missing_text), with the field path"),
        "413": _err("body over max_body_bytes (payload_too_large)"),
        "415": _err("not application/json in UTF-8 (unsupported_media_type)"),
        "500": _err("a server bug (internal_error); never caused by input"),
    }
    if auth:
        common["401"] = _err("no or unknown API key (missing_api_key, invalid_api_key)")
        common["403"] = _err("key lacks the scope (insufficient_scope)")

    def op(summary: str, ok: dict, *, body: str | None = None, extra: dict | None = None,
           scope: str | None = "score", desc: str = "") -> dict:
        responses = {"200": ok}
        if body is not None:
            responses.update(common)
        elif auth and scope:
            responses.update({k: common[k] for k in ("401", "403")})
        if extra:
            responses.update(extra)
        out = {"summary": summary, "responses": responses, "security": secured if scope else []}
        if desc:
            out["description"] = desc
        if scope:
            out["x-scope"] = scope
        if body is not None:
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
        return out

    text_ok = {"description": "", "content": {"text/plain": {"schema": {"type": "string"}}}}
    paths = {
        "/v1/score": {"post": op(
            "Score one ticket", _json(_ref("TriageResult"), "labels, confidences, evidence, due time"),
            body="Ticket", extra={"413": _err("body too large, or text over max_chars (text_too_long)"),
                                  "422": _err("blank text (empty_text) or unusable received_at "
                                              "(bad_received_at)")})},
        "/v1/score/batch": {"post": op(
            "Score many tickets in one request",
            _json(_ref("BatchResponse"), "one result or item error per ticket, in input order"),
            body="BatchRequest", desc=f"At most {config.max_batch} tickets; a bad ticket gets its own "
                                      "ItemError and does not fail the others.",
            extra={"413": _err("more than max_batch tickets (batch_too_large) or body too large")})},
        "/v1/feedback": {"post": op(
            "Store an agent's final labels for a ticket",
            _json(_ref("FeedbackResponse"), "stored (upsert per ticket id and head)"), body="FeedbackRequest",
            extra={"413": _err("text longer than max_chars (text_too_long) or body too large"),
                   "422": _err("unknown head or label, no labels, bad ticket_id or decided_at"),
                   "503": _err("feedback database unavailable; retry")})},
        "/v1/feedback/export": {"get": {**op(
            "Export all feedback as JSONL (one ticket per line)",
            {"description": "rows as load_feedback_rows returns them",
             "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
            scope="admin", extra={"400": _err("require_text is not true/false"),
                                  "503": _err("feedback database unavailable")}),
            "parameters": [{"name": "require_text", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}}]}},
        "/v1/model": {"get": op("The loaded model's manifest (bulky parts omitted)",
                                _json(_ref("Model"), "manifest plus label_names and service limits"))},
        "/v1/admin/reload": {"post": op(
            "Load a bundle, validate it and swap it in on every worker",
            _json(_ref("ReloadResponse"), "every live worker serves the new model"),
            body="ReloadRequest", scope="admin",
            extra={"202": _json(_ref("ReloadResponse"), "published, but not every worker switched within "
                                                        "TRIAGE_RELOAD_WAIT"),
                   "409": _err("another reload is running (reload_in_progress) or a worker could not load "
                               "the bundle and the reload was rolled back (reload_failed_in_worker)"),
                   "422": _err("the bundle is missing, corrupt or fails its warm-up (bad_bundle); the old "
                               "model keeps serving")})},
        "/healthz": {"get": op("Liveness", _json(_ref("Health"), "alive"), scope=None)},
        "/readyz": {"get": op("Readiness: a warm model is loaded", _json(_ref("Ready"), "ready"), scope=None,
                              extra={"503": _err("not ready (not_ready)")})},
        "/metrics": {"get": op("Prometheus metrics (text exposition format)", text_ok, scope=None)},
        "/openapi.json": {"get": op("This document", {"description": "OpenAPI 3.1",
                                                      "content": {"application/json": {"schema": {"type": "object"}}}})},
        "/": {"get": op("The triage console (HTML)",
                        {"description": "", "content": {"text/html": {"schema": {"type": "string"}}}})},
    }
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "triage", "version": "1",
                 "description": "Chinese complaint triage: category, department, urgency, sentiment, escalation "
                                "flags and due time. Errors are {\"error\": {\"code\", \"message\", \"field\"?}}. "
                                "Unknown request fields are ignored. Every response carries X-Request-ID. "
                                + ("Authentication: X-API-Key or Authorization: Bearer (Basic: the password is "
                                   "the key); scope 'admin' implies 'score'." if auth else
                                   "No API keys are configured on this server: no authentication.")},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": _schemas(config)},
    }
    if auth:
        doc["components"]["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
            "Basic": {"type": "http", "scheme": "basic", "description": "any user name; the password is the key"},
        }
    return doc
