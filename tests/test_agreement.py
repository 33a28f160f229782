"""Inter-annotator agreement: Cohen's kappa and the report over the heads an annotator labelled."""

import json

import pytest

from training.agreement import AGREEMENT_DIR, SETS, agreement_report, cohen_kappa
from training.corpus import _record_id


def test_cohen_kappa_of_known_tables():
    assert cohen_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == 1.0
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "a", "b"]) == 0.0
    assert cohen_kappa(["a", "a", "a", "b"], ["a", "a", "b", "b"]) == pytest.approx(0.5)


def test_report_covers_only_the_heads_the_annotator_labelled(tmp_path):
    raw, agreement = tmp_path / "raw", tmp_path / "agreement"
    raw.mkdir(), agreement.mkdir()
    gold = [{"text": f"第{i}号楼停电了", "category": "facility_failure", "department": "engineering",
             "urgency": "same_day" if i % 2 else "normal", "sentiment": "neutral", "escalation": []}
            for i in range(6)]
    (raw / "x.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in gold), "utf-8")
    ids = [_record_id(r["text"]) for r in gold]
    second = [{"id": i, "urgency": r["urgency"], "category": "facility_failure"} for i, r in zip(ids, gold)]
    second[0]["urgency"] = "same_day"  # one disagreement
    (agreement / "edge_annotator2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in second), "utf-8")
    (agreement / "edge_sample_ids.txt").write_text("\n".join(ids), "utf-8")
    report = agreement_report(raw, agreement, sample="edge_sample_ids.txt", annotator="edge_annotator2.jsonl")
    assert report["n"] == 6 and set(report["heads"]) == {"category", "urgency"} and report["flags"] == {}
    assert report["heads"]["urgency"]["agreement"] == round(5 / 6, 4)
    assert report["heads"]["urgency"]["top_disagreements"] == [["normal -> same_day", 1]]


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_shipped_agreement_set_labels_its_whole_sample(name):
    sample, annotator, _ = SETS[name]
    ids = (AGREEMENT_DIR / sample).read_text().split()
    report = agreement_report(sample=sample, annotator=annotator)
    assert report["n"] == len(ids) > 0
    heads = {"urgency"} if name.startswith("audit-") else {"category", "urgency", "sentiment"}
    assert heads <= set(report["heads"])
