"""The HTTP API through Flask's test client, around the tiny fixture bundle."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serve.config import Config, ConfigError, parse_api_keys

RECEIVED = "2026-03-02T10:00:00+08:00"  # a Monday in working hours


@pytest.fixture
def client(serve_client):
    """The conftest's ``serve_client`` under a short name."""
    return serve_client


def error_of(resp, status: int, code: str, field: str | None = None) -> dict:
    """Assert a JSON error body of exactly the documented shape."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) <= {"code", "message", "field"} and isinstance(err["message"], str) and err["message"]
    assert err["code"] == code, err
    if field is not None:
        assert err.get("field") == field, err
    return err


# -- scoring ------------------------------------------------------------------------------
def test_score_returns_the_library_result(client, serve_model):
    ticket = {"id": 42, "text": "小区3号楼停水了，到现在还没来水，家里有老人", "received_at": RECEIVED, "channel": "hotline"}
    resp = client.post("/v1/score", json=ticket)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = resp.get_json()
    assert body == json.loads(json.dumps(serve_model.score(ticket).to_dict()))
    assert body["id"] == "42"
    for head in ("category", "department", "urgency", "sentiment"):
        assert {"label", "confidence", "top", "needs_review"} <= set(body[head])
        assert 1 <= len(body[head]["top"]) <= 3
    assert body["due_at"] and body["model_version"] == serve_model.model_version
    assert "停水" in resp.get_data(as_text=True)  # UTF-8, not \\u escapes


def test_unknown_fields_are_ignored(client):
    plain = client.post("/v1/score", json={"text": "快递五天了还没送到", "received_at": RECEIVED}).get_json()
    extra = client.post("/v1/score", json={"text": "快递五天了还没送到", "received_at": RECEIVED,
                                           "priority": [1, {"x": None}], "meta": {"a": 1}}).get_json()
    assert plain == extra


def test_evidence_offsets_point_into_the_text(client):
    text = "您好！小区里闻到煤气味，很浓，有人头晕受伤了"
    body = client.post("/v1/score", json={"text": text}).get_json()
    spans = [r["evidence"] for r in body["urgency"]["reasons"] if "evidence" in r]
    spans += [e for f in body["escalation"] for e in f["evidence"]]
    assert spans
    for s in spans:
        assert text[s["start"]:s["end"]] == s["text"]


def test_request_id_is_honoured_or_generated(client):
    resp = client.post("/v1/score", json={"text": "停电了"}, headers={"X-Request-ID": "abc-123.x"})
    assert resp.headers["X-Request-ID"] == "abc-123.x"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces\u00e9"}).headers["X-Request-ID"]
    assert generated != "bad id with spaces\u00e9" and len(generated) == 32


def test_batch_keeps_order_with_per_ticket_errors(client, serve_model):
    tickets = [{"id": "a", "text": "网上银行无法登录，转账失败", "received_at": RECEIVED},
               {"id": "b", "text": "   "},
               7,
               {"id": "d", "text": 5},
               {"id": "e", "text": "x" * (serve_model.max_chars + 1)},
               {"id": True, "text": "ok"},
               {"id": "g", "text": "营业厅工作人员态度很差", "received_at": "not a time"},
               {"id": "h", "text": "暖气不热", "received_at": "9999-12-31T23:59:59+00:00"},
               {"text": "快递送错地址了", "received_at": RECEIVED}]
    resp = client.post("/v1/score/batch", json={"tickets": tickets})
    assert resp.status_code == 200
    body = resp.get_json()
    res = body["results"]
    assert len(res) == len(tickets) and body["model_version"] == serve_model.model_version
    assert res[0] == json.loads(json.dumps(serve_model.score(tickets[0]).to_dict()))
    assert res[8]["id"] is None and "category" in res[8]
    expected = {1: ("empty_text", "tickets[1].text"), 2: ("bad_type", "tickets[2]"),
                3: ("bad_type", "tickets[3].text"), 4: ("text_too_long", "tickets[4].text"),
                5: ("bad_type", "tickets[5].id"), 6: ("bad_received_at", "tickets[6].received_at"),
                7: ("bad_received_at", "tickets[7].received_at")}
    for i, (code, field) in expected.items():
        assert res[i]["index"] == i
        assert res[i]["error"]["code"] == code and res[i]["error"]["field"] == field, res[i]
    assert res[1]["id"] == "b" and res[2]["id"] is None and res[5]["id"] is None


def test_batch_limits_and_shape(make_app):
    client = make_app(max_batch=3).test_client()
    error_of(client.post("/v1/score/batch", json={"tickets": [{"text": "a"}] * 4}), 413, "batch_too_large", "tickets")
    assert client.post("/v1/score/batch", json={"tickets": [{"text": "停水"}] * 3}).status_code == 200
    assert client.post("/v1/score/batch", json={"tickets": []}).get_json()["results"] == []
    error_of(client.post("/v1/score/batch", json={"tickets": {"text": "a"}}), 400, "bad_type", "tickets")
    error_of(client.post("/v1/score/batch", json={"ticket": []}), 400, "missing_field", "tickets")
    error_of(client.post("/v1/score/batch", json=[{"text": "a"}]), 400, "bad_type", "")


# -- bad input never gives a 500 ---------------------------------------------------------
BAD_BODIES = [
    # (data, content type, status, code, field)
    (b'{"text": "a"}', None, 415, "unsupported_media_type", None),
    (b'{"text": "a"}', "text/plain", 415, "unsupported_media_type", None),
    (b'{"text": "a"}', "application/x-www-form-urlencoded", 415, "unsupported_media_type", None),
    (b'{"text": "a"}', "application/json; charset=latin-1", 415, "unsupported_media_type", None),
    (b'{"text": "a"', "application/json", 400, "bad_json", None),
    (b"", "application/json", 400, "bad_json", None),
    (b'\xff\xfe{"text": "a"}', "application/json", 400, "bad_encoding", None),
    ('{"text": "中文投诉"}'.encode("gbk"), "application/json", 400, "bad_encoding", None),
    (b'{"text": NaN}', "application/json", 400, "bad_json", None),
    (b'{"text": "a", "n": 1' + b"1" * 5000 + b"}", "application/json", 400, "bad_json", None),
    (b"[" * 40 + b"]" * 40, "application/json", 400, "too_deep", None),
    (b'{"text": "a", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}", "application/json", 400, "too_deep", None),
    (b'"just a string"', "application/json", 400, "bad_type", ""),
    (b'{"text": ["a"]}', "application/json", 400, "bad_type", "text"),
    (b'{"id": "x"}', "application/json", 400, "missing_text", "text"),
    (b'{"text": null}', "application/json", 400, "missing_text", "text"),
    (b'{"text": "\\ud800abc"}', "application/json", 400, "bad_encoding", "text"),
    (b'{"text": "a", "id": {"x": 1}}', "application/json", 400, "bad_type", "id"),
    (b'{"text": "a", "id": "\\udfff"}', "application/json", 400, "bad_type", "id"),
    (b'{"text": "a", "channel": 5}', "application/json", 400, "bad_type", "channel"),
    (b'{"text": "a", "received_at": 1700000000}', "application/json", 400, "bad_type", "received_at"),
    (b'{"text": ""}', "application/json", 422, "empty_text", "text"),
    (b'{"text": " \\n\\t\\u3000 "}', "application/json", 422, "empty_text", "text"),
    (b'{"text": "a", "received_at": "yesterday"}', "application/json", 422, "bad_received_at", "received_at"),
    (b'{"text": "a", "received_at": "0001-01-01T00:00:00+14:00"}', "application/json", 422, "bad_received_at",
     "received_at"),
]


@pytest.mark.parametrize("data,ctype,status,code,field", BAD_BODIES)
def test_bad_input_gets_a_clear_error(client, data, ctype, status, code, field):
    headers = {"Content-Type": ctype} if ctype else {}
    error_of(client.post("/v1/score", data=data, headers=headers), status, code, field)


def test_text_over_the_model_limit_is_413(client, serve_model):
    error_of(client.post("/v1/score", json={"text": "停" * (serve_model.max_chars + 1)}), 413, "text_too_long", "text")
    assert client.post("/v1/score", json={"text": "停" * serve_model.max_chars}).status_code == 200


def test_body_over_the_limit_is_refused_before_reading(make_app):
    client = make_app(max_body_bytes=1000).test_client()
    error_of(client.post("/v1/score", json={"text": "停" * 400}), 413, "payload_too_large")
    # the declared length alone is enough: the body is never read
    resp = client.post("/v1/score", data=b"{}", headers={"Content-Type": "application/json"},
                       environ_overrides={"CONTENT_LENGTH": "5000"})
    error_of(resp, 413, "payload_too_large")
    assert client.post("/v1/score", json={"text": "停" * 100}).status_code == 200


def test_json_content_type_variants_are_accepted(client):
    for ctype in ("application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8",
                  "application/problem+json"):
        resp = client.post("/v1/score", data='{"text": "停电了"}'.encode(), headers={"Content-Type": ctype})
        assert resp.status_code == 200, ctype
    resp = client.post("/v1/score", data=b'\xef\xbb\xbf{"text": "a"}', headers={"Content-Type": "application/json"})
    assert resp.status_code == 200  # a UTF-8 byte order mark is tolerated


def test_routing_errors_are_json(client):
    error_of(client.get("/v1/nothing"), 404, "not_found")
    resp = client.get("/v1/score")
    error_of(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


def test_unexpected_model_failure_is_isolated_to_its_ticket(client, monkeypatch, serve_model):
    real = type(serve_model).score_batch

    def flaky(self, tickets, errors="raise"):
        if any(isinstance(t, dict) and t.get("text") == "boom" for t in tickets):
            raise RuntimeError("simulated bug")
        return real(self, tickets, errors=errors)

    monkeypatch.setattr(type(serve_model), "score_batch", flaky)
    res = client.post("/v1/score/batch", json={"tickets": [{"text": "停水"}, {"text": "boom"}]}).get_json()["results"]
    assert "category" in res[0] and res[1]["error"]["code"] == "internal_error"
    error_of(client.post("/v1/score", json={"text": "boom"}), 500, "internal_error")


# -- model, probes, documents --------------------------------------------------------------
def test_model_endpoint_shows_the_manifest_without_bulk(client, serve_model):
    body = client.get("/v1/model").get_json()
    assert body["model_version"] == serve_model.model_version
    assert set(body["heads"]) == {"category", "department", "urgency", "sentiment"}
    assert body["heads"]["urgency"]["thresholds"]
    assert "confusion" not in json.dumps(body)
    assert body["metrics"]["cv"]["heads"]["category"]["macro_f1"] is not None
    assert body["label_names"]["category"]["billing"] == "费用账单"
    assert body["service"] == {"generation": 0, "loaded_at": body["service"]["loaded_at"],
                               "max_chars": serve_model.max_chars, "max_batch": 256, "max_body_bytes": 8388608,
                               "featurizer": "compiled" if serve_model.featurizer.compiled else "numpy"}


def test_health_and_readiness(client, serve_model):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "model_version": serve_model.model_version, "generation": 0}


def test_openapi_document_lists_every_route(make_app):
    app = make_app()
    doc = app.test_client().get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    routes = {(rule.rule, m.lower()) for rule in app.url_map.iter_rules()
              for m in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    assert doc["components"]["schemas"]["BatchRequest"]["properties"]["tickets"]["maxItems"] == 256


def test_console_page_is_self_contained(client):
    resp = client.get("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert 'id="text"' in html and 'id="score"' in html
    assert "<script src" not in html and "@import" not in html
    assert html.count("<link") == html.count('<link rel="icon" href="data:,">')
    assert "http://" not in html and "https://" not in html
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "'sha256-" in csp


def test_metrics_count_requests_predictions_and_review(client):
    client.post("/v1/score", json={"text": "家里宽带完全断网了"})
    client.post("/v1/score/batch", json={"tickets": [{"text": "停水了"}, {"text": ""}]})
    client.post("/v1/score", data=b"{", headers={"Content-Type": "application/json"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'triage_http_requests_total{endpoint="/v1/score",method="POST",status="200"} 1.0' in text
    assert 'triage_http_requests_total{endpoint="/v1/score",method="POST",status="400"} 1.0' in text
    assert 'triage_http_request_duration_seconds_bucket{endpoint="/v1/score/batch"' in text
    assert "triage_scored_tickets_total 2.0" in text
    assert "triage_needs_review_total" in text
    assert 'triage_ticket_errors_total{code="empty_text"} 1.0' in text
    assert sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('triage_predictions_total{head="urgency"')) == 2.0
    assert 'triage_model_info{generation="0",model_version="serve-tiny-' in text


# -- logs ------------------------------------------------------------------------------------
def test_request_logs_are_json_lines_without_text_at_info(client, serve_logs):
    client.post("/v1/score", json={"text": "我的手机号13812345678被乱扣费"}, headers={"X-Request-ID": "req-1"})
    records = serve_logs.records()
    req = [r for r in records if r["msg"] == "request"][-1]
    assert req["request_id"] == "req-1" and req["status"] == 200 and req["endpoint"] == "/v1/score"
    assert isinstance(req["latency_ms"], float)
    assert "13812345678" not in "".join(serve_logs.lines) and "乱扣费" not in "".join(serve_logs.lines)


def test_debug_logs_show_text_only_masked(make_app, serve_logs):
    client = make_app(log_level="DEBUG").test_client()
    client.post("/v1/score", json={"text": "我的手机号13812345678被乱扣费，邮箱a.b@example.com"})
    client.post("/v1/score/batch", json={"tickets": [{"text": "身份证110101199003077777丢了"}]})
    joined = "".join(serve_logs.lines)
    assert "<mobile>" in joined and "<email>" in joined and "<id_card>" in joined
    assert "13812345678" not in joined and "example.com" not in joined and "110101199003077777" not in joined
    assert all(json.loads(line)["level"] in ("debug", "info", "warning") for line in serve_logs.lines)


# -- configuration and import hygiene -----------------------------------------------------
def test_config_from_env_defaults_and_overrides():
    c = Config.from_env({})
    assert (c.model_path, c.host, c.port, c.workers, c.max_batch) == ("models/default", "127.0.0.1", 8080, 2, 256)
    assert c.database_url == "sqlite:///var/feedback.sqlite3" and c.api_keys == {} and c.log_level == "INFO"
    env = {"TRIAGE_MODEL": "m", "TRIAGE_PORT": "9000", "TRIAGE_WORKERS": "3", "TRIAGE_MAX_BATCH": "10",
           "TRIAGE_MAX_BODY_BYTES": "2048", "TRIAGE_LOG_LEVEL": "debug", "DATABASE_URL": "sqlite:///x.db",
           "TRIAGE_API_KEYS": " k1:score , k:2:admin,", "TRIAGE_HOST": "::1"}
    c = Config.from_env(env, port=9100)
    assert (c.model_path, c.port, c.workers, c.max_batch, c.max_body_bytes, c.log_level, c.host) == \
        ("m", 9100, 3, 10, 2048, "DEBUG", "::1")
    assert c.api_keys == {"k1": "score", "k:2": "admin"}
    assert "k1" not in repr(c) and "2 keys" in repr(c)


@pytest.mark.parametrize("env", [{"TRIAGE_PORT": "http"}, {"TRIAGE_WORKERS": "0"}, {"TRIAGE_LOG_LEVEL": "loud"},
                                 {"TRIAGE_API_KEYS": "secret"}, {"TRIAGE_API_KEYS": "secret:root"}])
def test_bad_config_is_refused_without_echoing_keys(env):
    with pytest.raises(ConfigError) as err:
        Config.from_env(env)
    assert "secret" not in str(err.value)


def test_parse_api_keys_skips_blanks():
    assert parse_api_keys(",,a:score,") == {"a": "score"}


def test_importing_serve_loads_no_resources():
    code = ("import sys, serve.app, serve.api, serve.run, serve.cli, serve.feedback, serve.metrics;"
            "bad = [m for m in ('prometheus_client', 'onnxruntime', 'sqlalchemy', 'gunicorn') if m in sys.modules];"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_create_app_refuses_a_missing_bundle(serve_config, tmp_path):
    from serve.app import create_app
    from triage.errors import BundleError

    with pytest.raises(BundleError):
        create_app(serve_config.replace(model_path=str(tmp_path / "missing")))
