"""Model reload in one process: validation, atomic swap, failures, generations on disk."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from serve.reload import ModelHolder


@pytest.fixture
def client(serve_client):
    """The conftest's ``serve_client`` under a short name."""
    return serve_client


def version_of(bundle) -> str:
    return json.loads((bundle / "manifest.json").read_text("utf-8"))["model_version"]


def test_reload_swaps_the_model(client, serve_bundle, serve_bundle_b):
    old, new = version_of(serve_bundle), version_of(serve_bundle_b)
    assert client.post("/v1/score", json={"text": "停水了"}).get_json()["model_version"] == old
    resp = client.post("/v1/admin/reload", json={"path": str(serve_bundle_b)})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["model_version"] == new and body["previous_version"] == old
    assert body["generation"] == 1 and body["propagated"] is True
    assert body["workers"] == {"live": 1, "switched": 1}
    assert client.post("/v1/score", json={"text": "停水了"}).get_json()["model_version"] == new
    assert client.get("/v1/model").get_json()["model_version"] == new
    assert client.get("/readyz").get_json()["generation"] == 1
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'triage_model_reloads_total{result="ok"} 1.0' in metrics
    assert f'triage_model_info{{generation="1",model_version="{new}"}} 1.0' in metrics
    assert f'triage_model_info{{generation="0",model_version="{old}"}} 0.0' in metrics


def corrupt_copy(src, dst, how: str):
    shutil.copytree(src, dst)
    if how == "hash":
        onnx = dst / "heads" / "category.onnx"
        data = bytearray(onnx.read_bytes())
        data[-1] ^= 0xFF
        onnx.write_bytes(bytes(data))
    elif how == "manifest":
        (dst / "manifest.json").write_text("{ not json", "utf-8")
    elif how == "missing_file":
        (dst / "features" / "vocabulary.json").unlink()
    elif how == "schema":
        m = json.loads((dst / "manifest.json").read_text("utf-8"))
        m["schema_version"] = 99
        (dst / "manifest.json").write_text(json.dumps(m), "utf-8")
    return dst


@pytest.mark.parametrize("how", ["hash", "manifest", "missing_file", "schema", "nowhere", "not_a_dir"])
def test_failed_reload_keeps_the_old_model(client, serve_bundle, tmp_path, how):
    if how == "nowhere":
        path = tmp_path / "missing"
    elif how == "not_a_dir":
        path = tmp_path / "file"
        path.write_text("x")
    else:
        path = corrupt_copy(serve_bundle, tmp_path / "bad", how)
    resp = client.post("/v1/admin/reload", json={"path": str(path)})
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert err["code"] == "bad_bundle" and err["field"] == "path" and err["message"].startswith("cannot load bundle")
    assert client.get("/v1/model").get_json()["model_version"] == version_of(serve_bundle)
    assert client.post("/v1/score", json={"text": "停水了"}).status_code == 200
    assert 'triage_model_reloads_total{result="failed"} 1.0' in client.get("/metrics").get_data(as_text=True)


def test_bundle_that_fails_warmup_is_refused(make_app, serve_bundle, serve_bundle_b, monkeypatch):
    import triage.model

    app = make_app()
    real = triage.model.Model.score_batch

    def broken(self, tickets, errors="raise"):
        if self.model_version == version_of(serve_bundle_b):
            raise RuntimeError("cannot score")
        return real(self, tickets, errors=errors)

    monkeypatch.setattr(triage.model.Model, "score_batch", broken)
    resp = app.test_client().post("/v1/admin/reload", json={"path": str(serve_bundle_b)})
    assert resp.status_code == 422 and "warm-up" in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("body,status,code", [({}, 400, "missing_field"), ({"path": 3}, 400, "bad_type"),
                                              ({"path": ""}, 400, "bad_type"), ({"path": "a\x00b"}, 400, "bad_type")])
def test_reload_body_is_checked(client, body, status, code):
    resp = client.post("/v1/admin/reload", json=body)
    assert resp.status_code == status and resp.get_json()["error"]["code"] == code


def test_concurrent_reload_is_a_conflict(make_app, serve_bundle_b):
    app = make_app()
    holder = app.extensions["triage"].holder
    assert holder._local_lock.acquire()
    try:
        resp = app.test_client().post("/v1/admin/reload", json={"path": str(serve_bundle_b)})
    finally:
        holder._local_lock.release()
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "reload_in_progress"


def test_requests_during_a_reload_all_succeed(make_app, serve_bundle, serve_bundle_b):
    app = make_app()
    client = app.test_client()
    versions, failures, stop = set(), [], threading.Event()

    def traffic():
        c = app.test_client()
        while not stop.is_set():
            r = c.post("/v1/score", json={"text": "宽带断网了"})
            if r.status_code != 200:
                failures.append(r.status_code)
            else:
                versions.add(r.get_json()["model_version"])

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for path in (serve_bundle_b, serve_bundle, serve_bundle_b):
            assert client.post("/v1/admin/reload", json={"path": str(path)}).status_code == 200
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    assert versions == {version_of(serve_bundle), version_of(serve_bundle_b)}


# -- the runtime directory: how workers agree on a generation ------------------------------------
def test_a_new_worker_adopts_the_published_generation(serve_bundle, serve_bundle_b, tmp_path):
    first = ModelHolder(str(serve_bundle), str(tmp_path), reload_wait=2)
    first.ensure_started()
    try:
        status, body = first.reload(str(serve_bundle_b))
        assert status == 200 and body["generation"] == 1
        state = json.loads((tmp_path / "model-state.json").read_text("utf-8"))
        assert state["generation"] == 1 and state["path"] == str(serve_bundle_b.resolve())
        # a worker forked later from a master that preloaded the old bundle
        late = ModelHolder(str(serve_bundle), str(tmp_path))
        assert late.current.generation == 1 and late.current.version == version_of(serve_bundle_b)
    finally:
        first.close()


def test_watcher_follows_a_reload_published_elsewhere(serve_bundle, serve_bundle_b, tmp_path):
    publisher = ModelHolder(str(serve_bundle), str(tmp_path), reload_wait=0.1)
    follower = ModelHolder(str(serve_bundle), str(tmp_path), poll=0.05)
    follower.ensure_started()
    try:
        publisher.reload(str(serve_bundle_b))
        follower.poke()
        deadline = time.monotonic() + 5
        while follower.current.generation != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert follower.current.generation == 1 and follower.current.version == version_of(serve_bundle_b)
    finally:
        follower.close()
        publisher.close()


def test_a_worker_that_cannot_load_triggers_a_rollback(serve_bundle, serve_bundle_b, tmp_path, monkeypatch):
    """The publisher waits for acknowledgements; a worker's failure rolls everyone back (409)."""
    import serve.reload as reload_mod

    publisher = ModelHolder(str(serve_bundle), str(tmp_path), reload_wait=5)
    publisher.ensure_started()
    ack = tmp_path / "workers" / "999999.json"
    real_workers = ModelHolder.workers

    def with_failing_peer(self):
        acks = real_workers(self)
        state = self.read_state()
        if state["generation"] == 1:
            ack.write_text(json.dumps({"pid": 999999, "generation": 0, "failed_generation": 1}))
            acks.append(json.loads(ack.read_text()))
        return acks

    monkeypatch.setattr(ModelHolder, "workers", with_failing_peer)
    monkeypatch.setattr(reload_mod, "_alive", lambda pid: True)
    try:
        with pytest.raises(reload_mod.ApiError) as err:
            publisher.reload(str(serve_bundle_b))
        assert err.value.status == 409 and err.value.code == "reload_failed_in_worker"
        state = json.loads((tmp_path / "model-state.json").read_text("utf-8"))
        assert state["generation"] == 2 and state["path"] == str(serve_bundle.resolve())
        assert publisher.current.version == version_of(serve_bundle) and publisher.current.generation == 2
    finally:
        publisher.close()


def test_a_replaced_model_is_freed_after_the_reload(serve_bundle, serve_bundle_b, tmp_path):
    """Nothing keeps the old model alive, so ``release_memory`` can hand its memory back."""
    import weakref

    from serve.reload import release_memory

    holder = ModelHolder(str(serve_bundle), str(tmp_path), reload_wait=2)
    holder.ensure_started()
    try:
        old = weakref.ref(holder.current.model)
        status, _ = holder.reload(str(serve_bundle_b))
        assert status == 200
        release_memory()
        assert old() is None
    finally:
        holder.close()
