"""API keys and scopes."""

from __future__ import annotations

import base64
import hmac

import pytest

from serve.auth import KeyRing, presented_key

KEYS = {"score-key-123": "score", "admin-key-456": "admin"}
SCORE = {"X-API-Key": "score-key-123"}
ADMIN = {"X-API-Key": "admin-key-456"}


@pytest.fixture
def client(serve_client):
    """The conftest's ``serve_client`` under a short name."""
    return serve_client


@pytest.fixture
def secured(make_app):
    return make_app(api_keys=dict(KEYS)).test_client()


def basic(key: str, user: str = "agent") -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def test_without_keys_everything_is_open(client):
    assert client.post("/v1/score", json={"text": "停水了"}).status_code == 200
    assert client.get("/v1/feedback/export").status_code == 200
    assert client.get("/").status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_need_no_key(secured, path):
    assert secured.get(path).status_code == 200


@pytest.mark.parametrize("method,path", [("POST", "/v1/score"), ("POST", "/v1/score/batch"), ("POST", "/v1/feedback"),
                                         ("GET", "/v1/model"), ("GET", "/openapi.json"), ("GET", "/"),
                                         ("POST", "/v1/admin/reload"), ("GET", "/v1/feedback/export"),
                                         ("GET", "/no/such/path"), ("GET", "/v1/score")])
def test_everything_else_needs_a_key(secured, method, path):
    resp = secured.open(path, method=method, json={"text": "停水了"} if method == "POST" else None)
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "missing_api_key"
    assert "WWW-Authenticate" in resp.headers
    wrong = secured.open(path, method=method, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "invalid_api_key"


def test_key_forms_and_scopes(secured):
    ticket = {"text": "停水了"}
    assert secured.post("/v1/score", json=ticket, headers=SCORE).status_code == 200
    assert secured.post("/v1/score", json=ticket, headers={"Authorization": "Bearer score-key-123"}).status_code == 200
    assert secured.post("/v1/score", json=ticket, headers={"Authorization": "bearer  score-key-123 "}).status_code == 200
    assert secured.post("/v1/score", json=ticket, headers=basic("score-key-123")).status_code == 200
    assert secured.post("/v1/score", json=ticket, headers=ADMIN).status_code == 200  # admin implies score
    assert secured.post("/v1/score", json=ticket, headers={"Authorization": "Bearer"}).status_code == 401
    assert secured.post("/v1/score", json=ticket, headers={"Authorization": "Basic !!!"}).status_code == 401
    assert secured.post("/v1/score", json=ticket, headers={"X-API-Key": "score-key-12"}).status_code == 401
    assert secured.get("/", headers=basic("score-key-123")).status_code == 200
    assert 'Basic realm="triage"' == secured.get("/").headers["WWW-Authenticate"]


@pytest.mark.parametrize("method,path", [("POST", "/v1/admin/reload"), ("GET", "/v1/feedback/export")])
def test_admin_endpoints_refuse_score_keys(secured, serve_bundle, method, path):
    body = {"path": str(serve_bundle)} if method == "POST" else None
    resp = secured.open(path, method=method, json=body, headers=SCORE)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "insufficient_scope"
    assert secured.open(path, method=method, json=body, headers=ADMIN).status_code == 200


def test_auth_happens_before_the_body_is_read(secured):
    resp = secured.post("/v1/score", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 401


def test_keys_never_reach_the_logs(make_app, serve_logs):
    client = make_app(api_keys=dict(KEYS), log_level="DEBUG").test_client()
    client.post("/v1/score", json={"text": "停水了"}, headers=SCORE)
    client.post("/v1/score", json={"text": "停水了"}, headers={"X-API-Key": "guessed-key-789"})
    client.post("/v1/admin/reload", json={"path": "/nonexistent"}, headers=ADMIN)
    client.get("/v1/model", headers={"Authorization": "Bearer admin-key-456"})
    joined = "\n".join(serve_logs.lines)
    assert serve_logs.lines
    for secret in ("score-key-123", "admin-key-456", "guessed-key-789"):
        assert secret not in joined


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch):
    ring = KeyRing({"a" * 8: "score", "b" * 8: "admin", "c" * 8: "score"})
    calls = []
    real = hmac.compare_digest

    def counting(x, y):
        calls.append((len(x), len(y)))
        return real(x, y)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert ring.scope_of("a" * 8) == "score"
    assert ring.scope_of("zz") is None
    assert len(calls) == 6  # no early exit
    assert all(lx == ly == 32 for lx, ly in calls)  # digests: equal lengths whatever the key


def test_presented_key_sources():
    assert presented_key({"X-API-Key": " k "}) == "k"
    assert presented_key({"Authorization": "Bearer k"}) == "k"
    assert presented_key({"Authorization": "Basic " + base64.b64encode(b"u:k:x").decode()}) == "k:x"
    assert presented_key({"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()}) is None
    assert presented_key({"Authorization": "Digest abc"}) is None
    assert presented_key({}) is None
