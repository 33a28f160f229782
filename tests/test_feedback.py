"""The feedback store, its HTTP endpoint and ``triage feedback export``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata

import pytest

from serve.feedback import Feedback, FeedbackStore, export_jsonl, load_feedback_rows

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture
def client(serve_client):
    """The conftest's ``serve_client`` under a short name."""
    return serve_client


def _postgres_url() -> str | None:
    url = os.environ.get("TRIAGE_TEST_POSTGRES_URL")
    if not url:
        return None
    try:
        from sqlalchemy import create_engine, text

        from serve.feedback import normalize_url

        engine = create_engine(normalize_url(url), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception:
        return None
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh database: a SQLite file, or PostgreSQL when TRIAGE_TEST_POSTGRES_URL reaches a server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fb.sqlite3'}"
        return
    url = _postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL server reachable (set TRIAGE_TEST_POSTGRES_URL)")
    store = FeedbackStore(url)
    store.metadata.drop_all(store.engine)
    store.dispose()
    yield url
    store = FeedbackStore(url)
    store.metadata.drop_all(store.engine)
    store.dispose()


@pytest.fixture
def store(db_url):
    s = FeedbackStore(db_url)
    s.init_schema()
    yield s
    s.dispose()


# -- the store --------------------------------------------------------------------------------
def test_upsert_is_idempotent_per_ticket_and_head(store, db_url):
    fb = Feedback("t1", {"category": "billing", "urgency": "normal"}, agent="li", decided_at=T0, text="多扣了话费")
    first = store.store(fb)
    again = store.store(fb)
    assert first == again
    assert first["category"] == {"label": "billing", "agent": "li", "decided_at": T0.isoformat()}
    rows = load_feedback_rows(db_url)
    assert len(rows) == 1
    assert rows[0]["id"] == "t1" and rows[0]["text"] == "多扣了话费"
    assert rows[0]["category"] == "billing" and rows[0]["urgency"] == "normal"


def test_newer_decisions_win_and_text_is_kept(store, db_url):
    store.store(Feedback("t1", {"category": "billing"}, agent="li", decided_at=T0, text="原文"))
    store.store(Feedback("t1", {"category": "network"}, agent="wang", decided_at=T0 + dt.timedelta(hours=1)))
    late_retry = store.store(Feedback("t1", {"category": "delivery"}, agent="li", decided_at=T0))
    assert late_retry["category"]["label"] == "network"  # an older decision does not undo a newer one
    store.store(Feedback("t1", {"sentiment": "neutral"}, decided_at=T0))
    store.store(Feedback("t2", {"sentiment": "negative"}, decided_at=T0))
    rows = {r["id"]: r for r in load_feedback_rows(db_url)}
    assert rows["t1"]["text"] == "原文"  # feedback without text keeps the stored text
    assert rows["t1"]["category"] == "network" and rows["t1"]["sentiment"] == "neutral"
    assert rows["t1"]["feedback"]["category"]["agent"] == "wang"
    assert rows["t2"]["text"] is None and rows["t2"]["category"] is None  # every head key present
    store.store(Feedback("t1", {"category": "network"}, decided_at=T0 + dt.timedelta(hours=1), text="新的原文"))
    assert load_feedback_rows(db_url, require_text=True)[0]["text"] == "新的原文"
    assert [r["id"] for r in load_feedback_rows(db_url, require_text=True)] == ["t1"]


def test_sqlite_runs_in_wal_mode(tmp_path):
    from sqlalchemy import text

    store = FeedbackStore(f"sqlite:///{tmp_path / 'sub' / 'fb.sqlite3'}")  # parent dirs are created
    store.init_schema()
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    store.dispose()


def _writer(args):
    url, worker, n = args
    store = FeedbackStore(url)
    for i in range(n):
        store.store(Feedback(f"w{worker}-{i}", {"category": "billing"}, agent=f"a{worker}", text=f"文本{i}"))
        store.store(Feedback("shared", {"urgency": ["normal", "same_day", "within_24h"][i % 3]},
                             decided_at=T0 + dt.timedelta(seconds=i)))
    store.dispose()
    return n


def test_concurrent_writers_in_several_processes(tmp_path):
    url = f"sqlite:///{tmp_path / 'fb.sqlite3'}"
    FeedbackStore(url).init_schema()
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert sum(pool.map(_writer, [(url, w, 25) for w in range(4)])) == 100
    rows = {r["id"]: r for r in load_feedback_rows(url)}
    assert len(rows) == 101
    assert rows["shared"]["urgency"] == ["normal", "same_day", "within_24h"][24 % 3]  # the newest decision
    assert rows["shared"]["feedback"]["urgency"]["decided_at"] == (T0 + dt.timedelta(seconds=24)).isoformat()


def test_rows_feed_the_training_reader(store, db_url, tmp_path):
    from training.data import read_dataset

    labels = [("billing", "finance"), ("network", "network_ops"), ("delivery", "logistics")]
    for i in range(6):
        cat, dept = labels[i % 3]
        store.store(Feedback(f"t{i}", {"category": cat, "department": dept}, text=f"第{i}条投诉"))
    store.store(Feedback("no-text", {"category": "billing"}))
    out = tmp_path / "fb.jsonl"
    assert export_jsonl(db_url, out, require_text=True) == 6
    data = read_dataset([out])
    assert len(data) == 6 and set(data.labels) == {"category", "department"}
    assert data.labels["category"][:3] == ["billing", "network", "delivery"]


# -- the CLI ------------------------------------------------------------------------------------
def _parser():
    from serve.cli import register_feedback

    parser = argparse.ArgumentParser(prog="triage")
    register_feedback(parser.add_subparsers(dest="command"))
    return parser


def test_register_feedback_export_writes_jsonl(store, db_url, tmp_path, capsys):
    store.store(Feedback("t1", {"category": "billing"}, text="退款没到账"))
    store.store(Feedback("t2", {"category": "network"}))
    out = tmp_path / "out" / "feedback.jsonl"
    args = _parser().parse_args(["feedback", "export", "--db", db_url, "--out", str(out)])
    assert args.func(args) == 0
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["t1", "t2"] and rows[0]["text"] == "退款没到账"
    assert "exported 2 ticket(s)" in capsys.readouterr().err
    args = _parser().parse_args(["feedback", "export", "--db", db_url, "--out", "-", "--require-text"])
    assert args.func(args) == 0
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == ["t1"]


def test_export_of_a_database_without_tables_fails_cleanly(tmp_path, capsys):
    args = _parser().parse_args(["feedback", "export", "--db", f"sqlite:///{tmp_path / 'empty.db'}",
                                 "--out", str(tmp_path / "x.jsonl")])
    assert args.func(args) == 2
    assert "cannot read the feedback database" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_triage_command_picks_up_the_entry_point(monkeypatch, tmp_path, capsys):
    """What ``feedback = "serve.cli:register_feedback"`` in pyproject's triage.commands gives."""
    import triage.cli

    real = metadata.entry_points
    extra = metadata.EntryPoint(name="feedback", value="serve.cli:register_feedback", group="triage.commands")

    def entry_points(**kw):
        found = list(real(**kw))
        if kw.get("group") == "triage.commands" and not any(ep.name == "feedback" for ep in found):
            found.append(extra)
        return found

    monkeypatch.setattr(triage.cli.metadata, "entry_points", entry_points)
    url = f"sqlite:///{tmp_path / 'fb.sqlite3'}"
    s = FeedbackStore(url)
    s.init_schema()
    s.store(Feedback("t1", {"urgency": "same_day"}))
    s.dispose()
    out = tmp_path / "fb.jsonl"
    assert triage.cli.main(["feedback", "export", "--db", url, "--out", str(out)]) == 0
    assert json.loads(out.read_text("utf-8"))["urgency"] == "same_day"


# -- the endpoint -------------------------------------------------------------------------------
def test_feedback_endpoint_stores_and_exports(client):
    body = {"ticket_id": "T-1", "labels": {"category": "billing", "urgency": "within_24h"}, "agent": "张三",
            "decided_at": "2026-03-02T10:00:00", "text": "话费多扣了20元，电话13812345678", "extra": [1]}
    resp = client.post("/v1/feedback", json=body)
    assert resp.status_code == 200
    out = resp.get_json()
    assert out["ticket_id"] == "T-1" and out["text_stored"] is True
    assert out["stored"]["category"] == {"label": "billing", "agent": "张三",
                                         "decided_at": "2026-03-02T02:00:00+00:00"}  # naive = model time zone
    assert client.post("/v1/feedback", json=body).get_json() == out  # idempotent
    assert client.post("/v1/feedback", json={"ticket_id": 7, "labels": {"sentiment": "neutral"}}).status_code == 200
    export = client.get("/v1/feedback/export")
    assert export.status_code == 200 and export.mimetype == "application/x-ndjson"
    rows = [json.loads(line) for line in export.get_data(as_text=True).splitlines()]
    assert [r["id"] for r in rows] == ["7", "T-1"]
    assert rows[1]["text"] == body["text"]  # stored as sent, for retraining
    assert client.get("/v1/feedback/export?require_text=true").get_data(as_text=True).count("\n") == 1
    assert client.get("/v1/feedback/export?require_text=maybe").status_code == 400
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'triage_feedback_labels_total{head="category"} 2.0' in metrics


@pytest.mark.parametrize("body,status,code,field", [
    ({"labels": {"category": "billing"}}, 400, "missing_field", "ticket_id"),
    ({"ticket_id": True, "labels": {"category": "billing"}}, 400, "bad_type", "ticket_id"),
    ({"ticket_id": " ", "labels": {"category": "billing"}}, 422, "bad_ticket_id", "ticket_id"),
    ({"ticket_id": "x" * 201, "labels": {"category": "billing"}}, 422, "bad_ticket_id", "ticket_id"),
    ({"ticket_id": "t"}, 400, "missing_field", "labels"),
    ({"ticket_id": "t", "labels": ["billing"]}, 400, "bad_type", "labels"),
    ({"ticket_id": "t", "labels": {}}, 422, "no_labels", "labels"),
    ({"ticket_id": "t", "labels": {"colour": "red"}}, 422, "unknown_head", "labels.colour"),
    ({"ticket_id": "t", "labels": {"category": "weather"}}, 422, "unknown_label", "labels.category"),
    ({"ticket_id": "t", "labels": {"category": 3}}, 400, "bad_type", "labels.category"),
    ({"ticket_id": "t", "labels": {"category": "billing"}, "agent": 5}, 400, "bad_type", "agent"),
    ({"ticket_id": "t", "labels": {"category": "billing"}, "decided_at": "soon"}, 422, "bad_time", "decided_at"),
    ({"ticket_id": "t", "labels": {"category": "billing"}, "decided_at": "0001-01-01"}, 422, "bad_time", "decided_at"),
    ({"ticket_id": "t", "labels": {"category": "billing"}, "text": "停" * 5001}, 413, "text_too_long", "text"),
    ({"ticket_id": "t", "labels": {"category": "billing"}, "text": "\ud800"}, 400, "bad_encoding", "text"),
])
def test_feedback_validation(client, body, status, code, field):
    resp = client.post("/v1/feedback", json=body)
    assert resp.status_code == status, resp.get_json()
    assert resp.get_json()["error"]["code"] == code and resp.get_json()["error"]["field"] == field


def test_unreachable_database_gives_503_and_scoring_goes_on(make_app, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    client = make_app(database_url=f"sqlite:///{blocker / 'fb.sqlite3'}").test_client()
    resp = client.post("/v1/feedback", json={"ticket_id": "t", "labels": {"category": "billing"}})
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "feedback_store_unavailable"
    assert client.get("/v1/feedback/export").status_code == 503
    assert client.post("/v1/score", json={"text": "停水了"}).status_code == 200
