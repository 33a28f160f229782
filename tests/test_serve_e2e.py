"""End to end: the real server process (gunicorn, several workers) over HTTP on loopback."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time

import pytest

from tests.conftest import E2E_KEYS

pytestmark = pytest.mark.slow

SCORE = {"X-API-Key": E2E_KEYS["score"]}
ADMIN = {"Authorization": f"Bearer {E2E_KEYS['admin']}"}


def version_of(bundle) -> str:
    return json.loads((bundle / "manifest.json").read_text("utf-8"))["model_version"]


def metric_sum(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_score_and_batch_over_http(serve_server, serve_bundle):
    resp = serve_server.request("POST", "/v1/score", {"id": "e1", "text": "小区停电了，电梯里有人被困"}, SCORE)
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = resp.json()
    assert body["id"] == "e1" and body["model_version"] == version_of(serve_bundle) and body["due_at"]
    tickets = [{"id": str(i), "text": f"快递{i}天了还没送到"} for i in range(64)] + [{"id": "bad", "text": ""}]
    res = serve_server.request("POST", "/v1/score/batch", {"tickets": tickets}, SCORE).json()["results"]
    assert [r["id"] for r in res] == [str(i) for i in range(64)] + ["bad"]
    assert res[-1]["error"]["code"] == "empty_text"
    rid = serve_server.request("GET", "/healthz", headers={"X-Request-ID": "trace-7"}).headers["X-Request-ID"]
    assert rid == "trace-7"


def test_keys_are_enforced_over_http(serve_server, serve_bundle):
    assert serve_server.request("POST", "/v1/score", {"text": "停水"}).status == 401
    assert serve_server.request("GET", "/readyz").status == 200
    assert serve_server.request("POST", "/v1/admin/reload", {"path": str(serve_bundle)}, SCORE).status == 403


def test_metrics_cover_all_workers(serve_server):
    before = serve_server.request("GET", "/metrics").body.decode()
    n = 30
    for _ in range(n):
        assert serve_server.request("POST", "/v1/score", {"text": "网上银行无法登录"}, SCORE).status == 200
    after = serve_server.request("GET", "/metrics").body.decode()
    key = dict(endpoint="/v1/score", method="POST", status="200")
    assert metric_sum(after, "triage_http_requests_total", **key) - \
        metric_sum(before, "triage_http_requests_total", **key) == n
    assert metric_sum(after, "triage_http_request_duration_seconds_count", **key) >= n
    # /readyz answers as soon as one worker is up; on a busy machine the other may still be in
    # post_worker_init, so wait (bounded) for it to report before comparing.
    deadline = time.monotonic() + 20
    while True:
        shown = serve_server.request("GET", "/metrics").body.decode()
        pids = set(re.findall(r'triage_model_info\{[^}]*pid="(\d+)"[^}]*\} 1\.0', shown))
        workers = {str(p) for p in serve_server.worker_pids()}
        if (pids == workers and len(pids) == 2) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert pids == workers and len(pids) == 2


def _traffic(server, stop, results):
    while not stop.is_set():
        try:
            r = server.request("POST", "/v1/score", {"text": "家里宽带完全断网了"}, SCORE, timeout=10)
            results.append((r.status, r.json().get("model_version") if r.status == 200 else r.body))
        except OSError as exc:  # a refused or reset connection is a failed request too
            results.append((0, repr(exc)))


def test_reload_under_traffic_fails_no_request(serve_server, serve_bundle, serve_bundle_b):
    old, new = version_of(serve_bundle), version_of(serve_bundle_b)
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=_traffic, args=(serve_server, stop, results)) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        resp = serve_server.request("POST", "/v1/admin/reload", {"path": str(serve_bundle_b)}, ADMIN)
        assert resp.status == 200, resp.body
        body = resp.json()
        assert body["propagated"] is True and body["workers"] == {"live": 2, "switched": 2}
        time.sleep(0.2)  # requests that started before the swap have finished by now
        mark = len(results)
        time.sleep(0.5)
        after_reload = results[mark:]
        bad = serve_server.request("POST", "/v1/admin/reload", {"path": str(serve_bundle_b / "nope")}, ADMIN)
        assert bad.status == 422 and bad.json()["error"]["code"] == "bad_bundle"
        time.sleep(0.2)
        back = serve_server.request("POST", "/v1/admin/reload", {"path": str(serve_bundle)}, ADMIN)
        assert back.status == 200 and back.json()["propagated"] is True
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    assert len(results) > 50
    assert after_reload and {v for _, v in after_reload} == {new}  # every worker switched
    assert {v for _, v in results} == {old, new}
    for _ in range(10):
        assert serve_server.request("POST", "/v1/score", {"text": "停水"}, SCORE).json()["model_version"] == old


def test_a_replacement_worker_serves_the_reloaded_model(serve_server, serve_bundle, serve_bundle_b):
    new = version_of(serve_bundle_b)
    assert serve_server.request("POST", "/v1/admin/reload", {"path": str(serve_bundle_b)}, ADMIN).status == 200
    try:
        victim = serve_server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)  # the master forks a new worker from its preloaded (old) app
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = serve_server.worker_pids()
            if victim not in pids and len(pids) == 2:
                break
            time.sleep(0.1)
        assert victim not in serve_server.worker_pids()
        seen = {serve_server.request("POST", "/v1/score", {"text": "停水"}, SCORE).json()["model_version"]
                for _ in range(30)}
        assert seen == {new}
        metrics = serve_server.request("GET", "/metrics").body.decode()
        assert f'pid="{victim}"' not in metrics.split("# HELP triage_model_info")[1].split("# HELP")[0]
    finally:
        assert serve_server.request("POST", "/v1/admin/reload", {"path": str(serve_bundle)}, ADMIN).status == 200


def test_server_logs_are_json_without_keys_or_text(serve_server):
    serve_server.request("POST", "/v1/score", {"text": "我的电话13812345678被停机"}, {**SCORE, "X-Request-ID": "log-1"})
    time.sleep(0.2)
    lines = [line for line in serve_server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is a JSON object
    assert any(r.get("request_id") == "log-1" and r.get("msg") == "request" for r in records)
    text = "\n".join(lines)
    assert E2E_KEYS["score"] not in text and E2E_KEYS["admin"] not in text and "13812345678" not in text


@pytest.fixture
def small_server(serve_bundle, tmp_path):
    from tests.e2e.server import ServerProcess

    server = ServerProcess(serve_bundle, tmp_path, workers=1, extra_env={"TRIAGE_MAX_BODY_BYTES": "4096",
                                                                       "TRIAGE_GRACEFUL_TIMEOUT": "10"})
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def test_chunked_body_over_the_limit_is_413(small_server):
    conn = http.client.HTTPConnection("127.0.0.1", small_server.port, timeout=10)
    conn.putrequest("POST", "/v1/score")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b'{"text": "' + "停".encode() * 600
    try:
        for _ in range(4):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b'"}')
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server may answer and close before the rest is sent
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read())["error"]["code"] == "payload_too_large"
    conn.close()
    assert small_server.request("POST", "/v1/score", {"text": "停水"}).status == 200


def test_sigterm_finishes_in_flight_requests(small_server):
    body = json.dumps({"text": "快递一直没送到，物流信息不更新"}, ensure_ascii=False).encode()
    conn = http.client.HTTPConnection("127.0.0.1", small_server.port, timeout=20)
    conn.putrequest("POST", "/v1/score")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    conn.send(body[:10])  # the request is now in flight in a worker
    time.sleep(0.5)
    small_server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    conn.send(body[10:])
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["model_version"]
    conn.close()
    assert small_server.proc.wait(20) == 0
