"""``triage drift``: PSI of known distributions, vocabulary document frequencies, and the
command on the tiny bundle with texts, logged predictions, feedback and a stored reference."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from triage.bundle import read_manifest
from training.drift import (compute_label_psi, compute_psi, count_confidence_bins, count_term_documents,
                            count_vocabulary_documents, detect_drift, find_new_terms, is_term, summarize_reference)
from tests.bundles import TINY_FIXTURE, read_tiny_rows as read_rows, train_tiny  # noqa: E402

FIXTURE = TINY_FIXTURE
CATEGORY_COUNTS = {"billing": 15, "delivery": 15, "network": 15, "service_attitude": 15}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def logged(category: str, confidence: float, text: str | None = None) -> dict:
    """A row as ``triage score`` prints it (only the fields drift reads)."""
    row = {"category": {"label": category, "confidence": confidence},
           "department": {"label": "network_ops", "confidence": confidence},
           "urgency": {"label": "same_day", "confidence": confidence},
           "sentiment": {"label": "angry", "confidence": confidence}, "model_version": "tiny-old"}
    if text is not None:
        row["text"] = text
    return row


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    # 12 same_day rows in 2 folds: the out-of-fold same_day threshold can fall to its 0.05
    # floor and call every row same_day, which is label drift these tests must not see
    return train_tiny(tmp_path_factory.mktemp("drift") / "bundle", min_same_day_threshold=0.3)


# -- by hand -------------------------------------------------------------------------------
def test_psi_of_known_distributions():
    # 0.25·ln 2 + 0.25·ln 1.5
    assert compute_psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5), abs=1e-9)
    assert compute_psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.274653, abs=1e-6)
    assert compute_psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-12)
    # an empty bin counts as 1e-4: (0.9 − 1)·ln 0.9 + (0.1 − 1e-4)·ln(0.1 / 1e-4)
    assert compute_psi([100, 0], [90, 10]) == pytest.approx(-0.1 * math.log(0.9) + 0.0999 * math.log(1000), abs=1e-9)
    with pytest.raises(ValueError):
        compute_psi([1, 2], [1, 2, 3])


def test_label_psi_by_hand():
    out = compute_label_psi({"a": 50, "b": 50}, {"a": 25, "b": 75, "c": 0})
    assert out["psi"] == pytest.approx(0.2747, abs=1e-4)
    assert out["reference"] == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert out["recent"] == {"a": 0.25, "b": 0.75, "c": 0.0}
    assert out["contributions"]["a"] == round(0.25 * math.log(2), 4)
    assert out["unknown_labels"] == ["c"]


def test_confidence_histogram_bins():
    hist = count_confidence_bins([0.05, 0.1, 0.55, 0.95, 1.0])
    assert hist == [1, 1, 0, 0, 0, 1, 0, 0, 0, 2]


def test_reference_summary():
    probs = {"h": np.array([[0.9, 0.1], [0.3, 0.7], [0.45, 0.55]])}
    ref = summarize_reference(probs, {"h": ["x", "y"]})
    assert ref["confidence_hist"]["h"]["counts"] == [0, 0, 0, 0, 0, 1, 0, 1, 0, 1]
    assert ref["predicted_counts"]["h"] == {"x": 1, "y": 2}
    json.dumps(ref)  # storable in the manifest


def test_terms_by_hand():
    assert is_term("宇宙") and is_term("app") and not is_term("0元") and not is_term("a") and not is_term("，的")
    counts = count_term_documents(["元宇宙来了", "元宇宙", "宇宙宇宙"])
    assert counts["bigram"]["宇宙"] == 3 and counts["bigram"]["元宇"] == 2
    found = find_new_terms({"bigram": Counter({"宇宙": 30, "网络": 30, "很少": 2})}, 100,
                      {"bigram": {"网络": 40}}, 100)
    # 宇宙: share 0.3 vs (0 + 0.5) / 101 → lift 60.6; 网络 is common in the reference; 很少 is too rare
    assert [t["term"] for t in found["bigram"]] == ["宇宙"]
    assert found["bigram"][0]["lift"] == pytest.approx(0.3 / (0.5 / 101), abs=0.01)


# -- the tiny bundle -----------------------------------------------------------------------
@pytest.mark.slow
def test_vocabulary_document_frequencies_are_recovered(tiny_bundle):
    from triage.model import load
    from triage.normalize import feature_text, normalize_text

    vocab, n = count_vocabulary_documents(load(tiny_bundle))
    assert n == 60 and "word" not in vocab  # the tiny bundle has no word features
    texts = [feature_text(normalize_text(r["text"])) for r in read_rows()]
    for gram in ("用户", "反映", "宽带", "快递", "态度"):
        assert vocab["bigram"][gram] == sum(gram in t for t in texts)


@pytest.mark.slow
def test_training_data_shows_no_drift(tiny_bundle):
    report = detect_drift(tiny_bundle, FIXTURE, reference=FIXTURE)
    assert report["alert"] is False and report["alerts"] == []
    for head in ("category", "department", "urgency", "sentiment"):
        entry = report["heads"][head]
        assert entry["n"] == 60 and entry["sources"] == {"scored": 60}
        assert entry["labels"]["psi"] < 0.1  # below 0.1 is the conventional "no shift" band
        assert entry["confidence"]["psi"] == 0.0  # the same texts give the same confidences
    assert report["reference"]["confidence"] == "reference_file"
    assert report["terms"]["bigram"] == [] and report["terms"]["word"] == []


@pytest.mark.slow
def test_logged_predictions_drift_and_exit_3(tiny_bundle, tmp_path, capsys):
    from triage.cli import main

    rows = [logged("network", 0.95, f"用户反映：元宇宙直播间{k}号又断网了") for k in range(40)]
    recent = write_jsonl(tmp_path / "logged.jsonl", rows)
    report = detect_drift(tiny_bundle, recent)
    cat = report["heads"]["category"]
    assert cat["sources"] == {"logged": 40}
    # shares 0.25 each → (0, 0, 1, 0), empty shares at 1e-4
    expected = 3 * (1e-4 - 0.25) * math.log(1e-4 / 0.25) + 0.75 * math.log(1 / 0.25)
    assert cat["labels"]["psi"] == pytest.approx(expected, abs=1e-4)
    assert cat["labels"]["reference"] == {k: 0.25 for k in CATEGORY_COUNTS}
    assert {"kind": "labels", "head": "category", "psi": cat["labels"]["psi"]} in report["alerts"]
    assert report["model_versions_seen"] == {"tiny-old": 40}
    assert report["reference"]["confidence"] == "manifest"  # the bundle's out-of-fold histogram
    assert cat["confidence"]["reference"] == read_manifest(tiny_bundle)["reference"]["confidence_hist"]["category"]["counts"]
    bigrams = [t["term"] for t in report["terms"]["bigram"]]
    assert "宇宙" in bigrams and "直播" in bigrams
    assert "反映" not in bigrams  # in every training text
    code = main(["drift", "--model", str(tiny_bundle), "--data", str(recent), "--json", str(tmp_path / "d.json")])
    assert code == 3
    assert "ALERT labels" in capsys.readouterr().out
    assert json.loads((tmp_path / "d.json").read_text("utf-8"))["alert"] is True
    assert main(["drift", "--model", str(tiny_bundle), "--data", str(FIXTURE), "--reference", str(FIXTURE)]) == 0
    assert main(["drift", "--model", str(tiny_bundle), "--data", str(recent), "--psi-threshold", "100"]) == 0


@pytest.mark.slow
def test_feedback_export_uses_agents_labels(tiny_bundle, tmp_path):
    rows = [{"id": f"f{k}", "text": None, "category": lb, "department": None, "urgency": None, "sentiment": None,
             "feedback": {"category": {"agent": "a1", "decided_at": "2026-11-01T00:00:00+00:00",
                                       "model_version": "tiny-x"}}}
            for k, lb in enumerate(["billing"] * 30 + ["delivery"] * 10)]
    report = detect_drift(tiny_bundle, write_jsonl(tmp_path / "feedback.jsonl", rows))
    cat = report["heads"]["category"]
    assert cat["sources"] == {"feedback": 40}
    assert cat["labels"]["recent"] == {"billing": 0.75, "delivery": 0.25, "network": 0.0, "service_attitude": 0.0}
    assert report["heads"]["urgency"]["sources"] == {"unusable": 40}  # no label, no text
    assert report["model_versions_seen"] == {"tiny-x": 40}
    assert report["terms"]["n_recent_texts"] == 0


@pytest.mark.slow
def test_manifest_reference_histogram(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text("utf-8"))
    edges = [k / 10 for k in range(11)]
    manifest["reference"] = {"confidence_hist": {h: {"edges": edges, "counts": [0] * 9 + [60]}
                                                 for h in manifest["heads"]}}
    (bundle / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), "utf-8")
    same = detect_drift(bundle, write_jsonl(tmp_path / "a.jsonl", [logged("billing", 0.95)] * 10))
    assert same["reference"]["confidence"] == "manifest"
    assert same["heads"]["category"]["confidence"]["psi"] == 0.0
    low = detect_drift(bundle, write_jsonl(tmp_path / "b.jsonl", [logged("billing", 0.55)] * 10))
    conf = low["heads"]["category"]["confidence"]
    # all mass moves from the last bin to bin 5: 2 · (1 − 1e-4) · ln(1 / 1e-4)
    assert conf["psi"] == pytest.approx(2 * (1 - 1e-4) * math.log(1e4), abs=1e-3)
    assert conf["recent"] == [0, 0, 0, 0, 0, 10, 0, 0, 0, 0]
    assert {"kind": "confidence", "head": "category", "psi": conf["psi"]} in low["alerts"]
