"""``triage compare``: grouping and deltas by hand, then two tiny bundles on the same tickets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from training.compare import compare_bundles, compute_metric_deltas, format_comparison, group_changes
from tests.bundles import TINY_FIXTURE, read_tiny_rows as read_rows, train_tiny  # noqa: E402

FIXTURE = TINY_FIXTURE
HEADS = ("category", "department", "urgency", "sentiment")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """OLD: the usual tiny bundle; NEW: unigrams only and strong regularisation (it differs)."""
    root = tmp_path_factory.mktemp("compare")
    return (train_tiny(root / "old"),
            train_tiny(root / "new", features={"char_ngram_max": 1}, C=0.05))


# -- by hand -------------------------------------------------------------------------------
def test_group_changes_by_hand():
    texts = [f"工单{k} 电话13812345678" for k in range(6)]
    old = ["a", "a", "a", "b", "b", "c"]
    new = ["b", "b", "a", "a", "b", "b"]
    gold = ["b", "a", "a", "b", "b", "c"]
    out = group_changes(texts, old, new, gold, [0.9] * 6, [0.8] * 6, examples=1)
    assert out["n"] == 6 and out["changed"] == 4 and out["changed_rate"] == 0.6667
    assert [(g["from"], g["to"], g["count"]) for g in out["groups"]] == [("a", "b", 2), ("b", "a", 1), ("c", "b", 1)]
    ab = out["groups"][0]
    assert (ab["fixed"], ab["broken"]) == (1, 1)  # row 1 fixed, row 2 broken
    assert (out["fixed"], out["broken"]) == (1, 3)
    assert len(ab["examples"]) == 1
    assert ab["examples"][0] == {"row": 1, "text": "工单0 电话<mobile>", "true": "b",
                                 "old_confidence": 0.9, "new_confidence": 0.8}


def test_group_changes_without_gold_or_changes():
    out = group_changes(["x", "y"], ["a", "b"], ["a", "b"])
    assert out == {"n": 2, "changed": 0, "changed_rate": 0.0, "groups": []}


def test_metric_deltas_by_hand():
    def rep(acc, f1, cov, f1_a, recall):
        return {"heads": {"h": {"accuracy": acc, "macro_f1": f1, "at_thresholds": {"coverage": cov, "precision": None},
                                "per_class": {"a": {"f1": f1_a}}}},
                "same_day": {"recall": recall, "precision": 0.5}}

    out = compute_metric_deltas(rep(0.8, 0.7, 0.5, 0.6, 0.9), rep(0.85, 0.65, 0.55, 0.7, 0.95))
    assert out["h"]["accuracy"] == {"old": 0.8, "new": 0.85, "delta": 0.05}
    assert out["h"]["macro_f1"]["delta"] == -0.05
    assert out["h"]["coverage_at_thresholds"]["delta"] == 0.05
    assert out["h"]["precision_at_thresholds"]["delta"] is None
    assert out["h"]["per_class_f1"]["a"]["delta"] == 0.1
    assert out["same_day"]["recall"]["delta"] == 0.05


# -- two bundles ---------------------------------------------------------------------------
@pytest.mark.slow
def test_same_bundle_changes_nothing(bundles):
    old, _ = bundles
    report = compare_bundles(old, old, FIXTURE)
    assert report["changed_any_head"] == 0
    for head in HEADS:
        assert report["changes"][head]["changed"] == 0
        assert report["metrics"][head]["accuracy"]["delta"] == 0


@pytest.mark.slow
def test_changes_match_a_recount(bundles):
    from training.evaluate import evaluate_bundle
    from triage.model import load

    old, new = bundles
    report = compare_bundles(old, new, FIXTURE, examples=100)
    rows = read_rows()
    texts = [r["text"] for r in rows]
    a, b = load(old).score_batch(texts), load(new).score_batch(texts)
    assert report["changed_any_head"] > 0
    for head in HEADS:
        pairs = Counter((x.heads[head].label, y.heads[head].label) for x, y in zip(a, b)
                        if x.heads[head].label != y.heads[head].label)
        ch = report["changes"][head]
        assert {(g["from"], g["to"]): g["count"] for g in ch["groups"]} == dict(pairs)
        assert ch["changed"] == sum(pairs.values())
        fixed = sum(1 for x, y, r in zip(a, b, rows)
                    if x.heads[head].label != y.heads[head].label and y.heads[head].label == r[head])
        assert ch["fixed"] == fixed
        for g in ch["groups"]:
            assert len(g["examples"]) == g["count"]
            assert all(rows[e["row"] - 1][head] == e["true"] for e in g["examples"])
    ev_old, ev_new = evaluate_bundle(old, FIXTURE), evaluate_bundle(new, FIXTURE)
    for head in HEADS:
        acc = report["metrics"][head]["accuracy"]
        assert (acc["old"], acc["new"]) == (ev_old["heads"][head]["accuracy"], ev_new["heads"][head]["accuracy"])
        assert acc["delta"] == round(acc["new"] - acc["old"], 4)


@pytest.mark.slow
def test_unlabelled_tickets_and_cli(bundles, tmp_path, capsys):
    from triage.cli import main

    old, new = bundles
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": r["text"]}, ensure_ascii=False) + "\n" for r in read_rows()), "utf-8")
    report = compare_bundles(old, new, texts)
    assert report["labelled"] is False and "metrics" not in report
    assert "fixed" not in report["changes"]["category"]
    out = tmp_path / "cmp.json"
    assert main(["compare", str(old), str(new), "--data", str(FIXTURE), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text("utf-8"))
    assert saved["changes"]["category"]["changed"] == report["changes"]["category"]["changed"]
    assert "→" in printed and "macro_f1" in printed
    assert printed.startswith(format_comparison(saved).splitlines()[0])
