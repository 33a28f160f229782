"""``triage relabel``: formats, order, rejects, summary, resume after a real kill, workers, Dask."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from triage.cli import main  # noqa: E402
from triage.relabel import RelabelError, name_predictions, relabel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "tests" / "fixtures" / "relabel_train.jsonl"
AS_OF = "2026-01-05T10:00:00+08:00"
HEADS = ["category", "department", "urgency", "sentiment"]
PRED_SUFFIXES = ("", "_confidence", "_needs_review")
EXTRAS = ["urgency_reasons", "escalation_flags", "escalation_evidence", "needs_review", "review_reasons",
          "due_at", "model_version"]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    """A tiny character-n-gram bundle trained on tests/fixtures/relabel_train.jsonl."""
    from training.train import TrainConfig, train
    from triage.features import FeatureConfig

    out = tmp_path_factory.mktemp("relabel") / "tiny-bundle"
    train(TrainConfig(data=[str(TRAIN)], folds=2, name="tiny",
                      features=FeatureConfig(words=False, max_features=2000, min_df=1)), out)
    return out


@pytest.fixture(scope="session")
def train_rows() -> list[dict]:
    return [json.loads(line) for line in TRAIN.read_text("utf-8").splitlines()]


@pytest.fixture(scope="session")
def oracle(bundle):
    """Labels the model gives each text when scored on its own."""
    from triage.model import load

    model = load(bundle)

    def labels(texts: list[str]) -> list[dict]:
        out = []
        for res in model.score_batch([{"text": t, "received_at": AS_OF} for t in texts], errors="return"):
            out.append({h: (p.label, p.confidence) for h, p in res.heads.items()})
        return out
    return labels


def sample_rows(train_rows: list[dict], n: int) -> list[dict]:
    """``n`` input rows with ids, texts from the training fixture and a few extra columns."""
    rows = []
    for i in range(n):
        src = train_rows[(i * 7) % len(train_rows)]
        rows.append({"id": f"T{i:05d}", "text": src["text"], "channel": ["hotline", "web", "app"][i % 3],
                     "amount": str(i * 3)})
    return rows


def write_rows(path: Path, rows: list[dict], fmt: str) -> None:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
    else:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            if fmt == "tsv":
                writer = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
            else:
                writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(list(rows[0]))
            writer.writerows([list(r.values()) for r in rows])


def read_rows(path: Path, fmt: str) -> list[dict]:
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8", newline="") as fh:
        if fmt == "tsv":
            return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
        return list(csv.DictReader(fh))


def read_rejects(output: Path) -> list[dict]:
    return [json.loads(line) for line in Path(f"{output}.rejects.jsonl").read_text("utf-8").splitlines()]


def run_cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "triage.cli", "relabel", *args], cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True, **kwargs)


def comparable(summary: dict) -> dict:
    """A summary without the fields that depend on how and how fast it ran."""
    drop = {"elapsed_seconds", "rows_per_second", "engine", "workers", "chunks_resumed", "output",
            "rejects_file"}
    return {k: v for k, v in summary.items() if k not in drop}


# -- formats ----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_round_trip_keeps_columns_order_and_rows(tmp_path, bundle, train_rows, oracle, fmt):
    rows = sample_rows(train_rows, 23)
    src, out = tmp_path / f"in.{fmt}", tmp_path / f"out.{fmt}"
    write_rows(src, rows, fmt)
    summary = relabel(src, out, model=bundle, received_at=AS_OF, chunk_rows=5, batch_rows=3)
    got = read_rows(out, fmt)
    assert summary["rows_in"] == summary["rows_out"] == len(got) == 23
    assert summary["rejects"] == 0 and read_rejects(out) == []
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    expected_columns = list(rows[0]) + [h + s for h in HEADS for s in PRED_SUFFIXES] + EXTRAS
    assert list(got[0]) == expected_columns
    for want, have in zip(rows, got):
        assert {k: have[k] for k in want} == want
    truth = oracle([r["text"] for r in rows])
    for have, expect in zip(got, truth):
        for head in HEADS:
            assert have[head] == expect[head][0]
            assert float(have[head + "_confidence"]) == pytest.approx(expect[head][1], abs=1e-5)
        assert have["model_version"].startswith("tiny-")
    first = got[0]
    if fmt == "jsonl":
        assert isinstance(first["urgency_reasons"], list) and isinstance(first["escalation_evidence"], dict)
        assert isinstance(first["category_needs_review"], bool) and first["due_at"].startswith("20")
    elif fmt == "parquet":
        assert isinstance(json.loads(first["urgency_reasons"]), list)
        assert isinstance(first["escalation_flags"], list) and first["due_at"].tzinfo is not None
        assert pq.read_table(out).schema.field("category_confidence").type == pa.float64()
    else:
        assert isinstance(json.loads(first["urgency_reasons"]), list)
        assert first["category_needs_review"] in ("true", "false")
        assert json.loads(first["escalation_flags"]) == []


def test_csv_quoting_multiline_and_types_survive(tmp_path, bundle, train_rows):
    rows = [{"id": "007", "text": train_rows[0]["text"], "note": 'a "quoted", comma\nand a second line'},
            {"id": "008", "text": train_rows[20]["text"], "note": ""}]
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_rows(src, rows, "csv")
    relabel(src, out, model=bundle, received_at=AS_OF)
    got = read_rows(out, "csv")
    assert [(r["id"], r["text"], r["note"]) for r in got] == [(r["id"], r["text"], r["note"]) for r in rows]


def test_parquet_keeps_native_types(tmp_path, bundle, train_rows):
    import datetime as dt

    table = pa.table({"id": pa.array([10, 11, 12], pa.int64()),
                      "text": [train_rows[i]["text"] for i in (0, 15, 30)],
                      "score": [0.5, None, 1.25],
                      "tags": [["a"], [], ["b", "c"]],
                      "seen": pa.array([dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.timezone.utc)] * 3,
                                       pa.timestamp("ms", tz="UTC"))})
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(table, src)
    relabel(src, out, model=bundle, received_at=AS_OF)
    got = pq.read_table(out)
    assert got.select(table.column_names).equals(table)
    assert got.schema.field("due_at").type == pa.timestamp("us", tz="Asia/Shanghai")


@pytest.mark.parametrize("src_fmt,out_fmt", [("csv", "parquet"), ("jsonl", "csv"), ("parquet", "jsonl")])
def test_cross_format(tmp_path, bundle, train_rows, src_fmt, out_fmt):
    rows = sample_rows(train_rows, 9)
    src, out = tmp_path / f"in.{src_fmt}", tmp_path / f"out.{out_fmt}"
    write_rows(src, rows, src_fmt)
    summary = relabel(src, out, model=bundle, received_at=AS_OF, chunk_rows=4)
    got = read_rows(out, out_fmt)
    assert summary["rows_out"] == 9 and [r["id"] for r in got] == [r["id"] for r in rows]
    assert [r["text"] for r in got] == [r["text"] for r in rows]


def test_format_flag_and_unknown_extension(tmp_path, bundle, train_rows):
    src = tmp_path / "export.dat"
    write_rows(src, sample_rows(train_rows, 3), "jsonl")
    with pytest.raises(RelabelError, match="--format"):
        relabel(src, tmp_path / "out.jsonl", model=bundle)
    summary = relabel(src, tmp_path / "out.jsonl", model=bundle, fmt="jsonl", received_at=AS_OF)
    assert summary["rows_out"] == 3


def test_missing_text_column_is_an_error(tmp_path, bundle, train_rows):
    src = tmp_path / "in.csv"
    write_rows(src, sample_rows(train_rows, 2), "csv")
    with pytest.raises(RelabelError, match="no text column 'body'"):
        relabel(src, tmp_path / "out.csv", model=bundle, text_column="body")


# -- naming -----------------------------------------------------------------------------
def test_existing_label_columns_get_pred_prefix():
    names = name_predictions(HEADS, ["id", "text", "category", "urgency_confidence", "due_at"])
    assert names["category"] == "pred_category" and names["category_confidence"] == "pred_category_confidence"
    assert names["urgency"] == "pred_urgency" and names["urgency_needs_review"] == "pred_urgency_needs_review"
    assert names["department"] == "department" and names["sentiment_confidence"] == "sentiment_confidence"
    assert names["due_at"] == "pred_due_at" and names["model_version"] == "model_version"
    assert name_predictions(["category"], ["category", "pred_category"])["category"] == "pred_pred_category"


# -- rejects ----------------------------------------------------------------------------
def test_rejects_keep_rows_and_never_stop_the_run(tmp_path, bundle, train_rows):
    good = train_rows[0]["text"]
    lines = ["id,text,received_at\n", f"a1,{good},\n", "a2,,\n", "a3,   ,\n",
             f"a4,{good},not-a-time\n", "a5,only-two-fields\n", f"a6,{good},2026-02-02T09:00:00\n"]
    data = "".join(lines).encode("utf-8")
    data += b"a7,\xff\xfe\xe5\x9d\x8f,\n" + f"a8,{good},\n".encode("utf-8")
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_bytes(data)
    summary = relabel(src, out, model=bundle, received_at=AS_OF, chunk_rows=3)
    got = read_rows(out, "csv")
    assert [r["id"] for r in got] == [f"a{i}" for i in range(1, 9)]
    rejects = read_rejects(out)
    assert [(r["row"], r["id"], r["code"]) for r in rejects] == [
        (2, "a2", "empty_text"), (3, "a3", "empty_text"), (4, "a4", "bad_received_at"),
        (5, "a5", "bad_row"), (7, "a7", "bad_encoding")]
    assert [r["line"] for r in rejects] == [3, 4, 5, 6, 8]
    assert all(r["reason"] for r in rejects)
    for row in got:
        rejected = row["id"] in {"a2", "a3", "a4", "a5", "a7"}
        assert (row["category"] == "" and row["model_version"] == "") is rejected
    assert got[6]["text"] == "\ufffd\ufffd坏"  # undecodable bytes replaced, row kept in place
    assert got[5]["due_at"].startswith("2026-02-0")  # its own received_at, not the as-of time
    assert summary["rows_in"] == summary["rows_out"] == 8 and summary["rows_scored"] == 3
    assert summary["rejects"] == 5
    assert summary["rejects_by_code"] == {"bad_encoding": 1, "bad_received_at": 1, "bad_row": 1, "empty_text": 2}


def test_jsonl_bad_lines_are_rejected_in_place(tmp_path, bundle, train_rows):
    good = json.dumps({"id": 1, "text": train_rows[0]["text"]}, ensure_ascii=False)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes((good + "\n{not json\n\n[1, 2]\n" + json.dumps({"id": 5, "text": None}) + "\n"
                     + good.replace('"id": 1', '"id": 6') + "\n").encode())
    summary = relabel(src, out, model=bundle, received_at=AS_OF)
    got = read_rows(out, "jsonl")
    assert len(got) == summary["rows_out"] == 5  # the blank line is not a row
    assert [r.get("id") for r in got] == [1, None, None, 5, 6]
    assert [(r["row"], r["line"], r["code"]) for r in read_rejects(out)] == [
        (2, 2, "bad_json"), (3, 4, "bad_row"), (4, 5, "missing_text")]
    assert got[1]["category"] is None and got[4]["category"] == train_rows[0]["category"]


# -- summary and change report ----------------------------------------------------------
def test_summary_and_change_report_known_answers(tmp_path, bundle, train_rows, capsys):
    by_cat = {}
    for row in train_rows:
        by_cat.setdefault(row["category"], []).append(row["text"])
    # (text's true category, label already in the input)
    plan = [("billing", "billing"), ("billing", "billing"), ("billing", "delivery"), ("delivery", "delivery"),
            ("delivery", "billing"), ("network", "network"), ("network", ""), ("service_attitude", "billing"),
            ("service_attitude", "service_attitude"), ("service_attitude", "service_attitude")]
    rows = [{"id": str(i), "text": by_cat[true][i], "category": old} for i, (true, old) in enumerate(plan)]
    rows.append({"id": "10", "text": "", "category": "network"})
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_rows(src, rows, "csv")
    assert main(["relabel", str(src), str(out), "--model", str(bundle), "--received-at", AS_OF,
                 "--chunk-rows", "4"]) == 0
    summary = json.loads(Path(f"{out}.summary.json").read_text("utf-8"))
    assert summary["rows_in"] == 11 and summary["rows_out"] == 11 and summary["rejects"] == 1
    assert summary["chunks"] == 3
    assert summary["labels"]["category"] == {"billing": 3, "service_attitude": 3, "delivery": 2, "network": 2}
    assert summary["labels"]["department"] == {"finance": 3, "customer_service": 3, "logistics": 2,
                                               "network_ops": 2}
    assert summary["changes"] == {"category": {
        "compared": 9, "unchanged": 6, "changed": 3, "previously_unlabelled": 1,
        "moves": {"billing": {"delivery": 1, "service_attitude": 1}, "delivery": {"billing": 1}}}}
    assert summary["columns"]["category"] == "pred_category" and summary["columns"]["department"] == "department"
    got = read_rows(out, "csv")
    assert [r["category"] for r in got] == [old for _, old in plan] + ["network"]  # input labels untouched
    assert [r["pred_category"] for r in got] == [true for true, _ in plan] + [""]
    printed = capsys.readouterr().out
    assert "11 rows in, 11 rows out, 1 rejected" in printed
    assert "category: 3 of 9 labelled rows (33.3%)" in printed and "billing -> delivery: 1" in printed


def test_progress_bar_goes_to_stderr(tmp_path, bundle, train_rows, capsys):
    src = tmp_path / "in.jsonl"
    write_rows(src, sample_rows(train_rows, 12), "jsonl")
    relabel(src, tmp_path / "out.jsonl", model=bundle, received_at=AS_OF, chunk_rows=5, progress=True)
    err = capsys.readouterr().err
    assert "relabel: 100%" in err and "12.0/12.0" in err and "rows/s" in err


# -- resume -----------------------------------------------------------------------------
def big_input(tmp_path: Path, train_rows: list[dict], n: int, fmt: str = "jsonl") -> Path:
    rows = sample_rows(train_rows, n)
    for i in range(0, n, 97):
        rows[i]["text"] = ""  # some rejects, to check they survive the resume too
    src = tmp_path / f"big.{fmt}"
    write_rows(src, rows, fmt)
    return src


def wait_for_markers(parts: Path, proc: subprocess.Popen, count: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(list(parts.glob("chunk-*.done.json"))) if parts.exists() else 0
        if done >= count:
            return done
        if proc.poll() is not None:
            pytest.fail(f"relabel ended before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.005)
    pytest.fail("relabel made no progress")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_kill_9_equals_uninterrupted_run(tmp_path, bundle, train_rows, workers):
    src = big_input(tmp_path, train_rows, 4000)
    args = ["--model", str(bundle), "--received-at", AS_OF, "--chunk-rows", "40", "--workers", str(workers)]
    reference = tmp_path / "reference.jsonl"
    assert run_cli(str(src), str(reference), *args).returncode == 0

    out = tmp_path / "out.jsonl"
    parts = Path(f"{out}.parts")
    proc = subprocess.Popen([sys.executable, "-m", "triage.cli", "relabel", str(src), str(out), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for_markers(parts, proc, 5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9, the workers too
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    done_before = len(list(parts.glob("chunk-*.done.json")))
    assert 5 <= done_before < 100

    refused = run_cli(str(src), str(out), *args)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = run_cli(str(src), str(out), *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == reference.read_bytes()
    assert Path(f"{out}.rejects.jsonl").read_bytes() == Path(f"{reference}.rejects.jsonl").read_bytes()
    summary = json.loads(Path(f"{out}.summary.json").read_text("utf-8"))
    ref_summary = json.loads(Path(f"{reference}.summary.json").read_text("utf-8"))
    assert summary["chunks_resumed"] >= done_before and summary["rows_out"] == 4000
    assert comparable(summary) == comparable(ref_summary)
    assert not parts.exists()


@pytest.mark.slow
def test_resume_after_ctrl_c(tmp_path, bundle, train_rows):
    src = big_input(tmp_path, train_rows, 3000, "csv")
    args = ["--model", str(bundle), "--chunk-rows", "30"]
    out = tmp_path / "out.csv"
    # a test run started in the background inherits SIGINT ignored, which the child would keep
    proc = subprocess.Popen([sys.executable, "-m", "triage.cli", "relabel", str(src), str(out), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for_markers(Path(f"{out}.parts"), proc, 3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "--resume" in err
    job = json.loads(Path(f"{out}.parts/job.json").read_text("utf-8"))
    resumed = run_cli(str(src), str(out), *args, "--resume")  # no --received-at: the stored as-of is kept
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference.csv"
    assert run_cli(str(src), str(reference), *args, "--received-at", job["as_of"]).returncode == 0
    assert out.read_bytes() == reference.read_bytes()


def test_resume_refuses_a_changed_input_and_restart_starts_over(tmp_path, bundle, train_rows):
    src = big_input(tmp_path, train_rows, 30, "csv")
    out = tmp_path / "out.csv"
    relabel(src, out, model=bundle, received_at=AS_OF, chunk_rows=10, keep_parts=True)
    assert Path(f"{out}.parts").is_dir()
    with src.open("a", encoding="utf-8") as fh:
        fh.write("extra,新的一行投诉：快递丢了,web,1\n")
    with pytest.raises(RelabelError, match="input_size"):
        relabel(src, out, model=bundle, received_at=AS_OF, chunk_rows=10, resume=True)
    summary = relabel(src, out, model=bundle, received_at=AS_OF, chunk_rows=10, restart=True)
    assert summary["rows_out"] == 31 and summary["chunks_resumed"] == 0


def test_resume_reuses_finished_chunks(tmp_path, bundle, train_rows):
    src = big_input(tmp_path, train_rows, 50, "parquet")
    out = tmp_path / "out.parquet"
    first = relabel(src, out, model=bundle, received_at=AS_OF, chunk_rows=10, keep_parts=True)
    reference = out.read_bytes()
    for marker in sorted(Path(f"{out}.parts").glob("chunk-*.done.json"))[3:]:
        marker.unlink()  # as if the run had been killed after three chunks
    second = relabel(src, out, model=bundle, resume=True, chunk_rows=10)
    assert second["chunks_resumed"] == 3 and comparable(second) == comparable(first)
    assert pq.read_table(out).equals(pq.read_table(io.BytesIO(reference)))


# -- parallel ---------------------------------------------------------------------------
@pytest.mark.slow
def test_two_workers_equal_single_process(tmp_path, bundle, train_rows):
    src = big_input(tmp_path, train_rows, 600, "csv")
    single, double = tmp_path / "single.csv", tmp_path / "double.csv"
    one = relabel(src, single, model=bundle, received_at=AS_OF, chunk_rows=25)
    two = relabel(src, double, model=bundle, received_at=AS_OF, chunk_rows=25, workers=2)
    assert two["workers"] == 2 and two["rows_out"] == 600
    assert double.read_bytes() == single.read_bytes()
    assert Path(f"{double}.rejects.jsonl").read_bytes() == Path(f"{single}.rejects.jsonl").read_bytes()
    assert comparable(two) == comparable(one)


# -- Dask -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dask_cluster():
    """A real LocalCluster: two worker processes with one thread each, on loopback only."""
    distributed = pytest.importorskip("distributed")
    import logging

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, memory_limit="1GiB",
                                       silence_logs=logging.ERROR)
    try:
        yield cluster
    finally:
        cluster.close(timeout=30)


@pytest.fixture
def deadline():
    """Bound a test that talks to a cluster: dump the stacks and exit if it hangs."""
    import faulthandler

    faulthandler.dump_traceback_later(180, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.mark.slow
def test_dask_local_cluster_equals_single_process(tmp_path, bundle, train_rows, dask_cluster, deadline):
    from distributed import Client

    src = big_input(tmp_path, train_rows, 300, "parquet")
    single, dasked = tmp_path / "single.parquet", tmp_path / "dask.parquet"
    one = relabel(src, single, model=bundle, received_at=AS_OF, chunk_rows=20)
    two = relabel(src, dasked, model=bundle, received_at=AS_OF, chunk_rows=20, engine="dask",
                  scheduler=dask_cluster.scheduler_address)
    assert two["engine"] == "dask" and two["rows_out"] == 300 and two["chunks"] == one["chunks"]
    assert pq.read_table(dasked).equals(pq.read_table(single))
    assert Path(f"{dasked}.rejects.jsonl").read_bytes() == Path(f"{single}.rejects.jsonl").read_bytes()
    assert comparable(two) == comparable(one)
    with Client(dask_cluster.scheduler_address, timeout="30s") as client:
        loaded = client.run(lambda: sorted(__import__("triage.relabel").relabel._MODELS))
    assert len(loaded) == 2 and all(paths == [str(bundle.resolve())] for paths in loaded.values())


@pytest.mark.slow
def test_dask_embedded_local_cluster_from_the_cli(tmp_path, bundle, train_rows):
    src = big_input(tmp_path, train_rows, 120, "parquet")
    single, dasked = tmp_path / "single.parquet", tmp_path / "dask.parquet"
    relabel(src, single, model=bundle, received_at=AS_OF, chunk_rows=30)
    proc = run_cli(str(src), str(dasked), "--model", str(bundle), "--received-at", AS_OF, "--chunk-rows", "30",
                   "--engine", "dask", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "120 rows in, 120 rows out" in proc.stdout
    assert pq.read_table(dasked).equals(pq.read_table(single))


def test_dask_tasks_are_runs_of_chunks_within_one_row_group():
    pytest.importorskip("distributed")
    from triage.relabel_dask import plan_tasks

    # (index, start_row, row_group, offset, rows); chunk 2 is already done (resume)
    pieces = [(0, 0, 0, 0, 10), (1, 10, 0, 10, 10), (3, 30, 0, 30, 10), (4, 40, 0, 40, 5),
              (5, 45, 1, 0, 10), (6, 55, 1, 10, 10)]
    tasks = plan_tasks(pieces, per_task=3)
    assert [[p[0] for p in t] for t in tasks] == [[0, 1, 3], [4], [5, 6]]
    assert all(len({p[2] for p in t}) == 1 for t in tasks)


def test_dask_engine_needs_parquet(tmp_path, bundle, train_rows):
    src = tmp_path / "in.csv"
    write_rows(src, sample_rows(train_rows, 2), "csv")
    with pytest.raises(RelabelError, match="Parquet"):
        relabel(src, tmp_path / "out.csv", model=bundle, engine="dask")
