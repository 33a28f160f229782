"""Inter-annotator agreement between the corpus labels and a blind second annotator.

    python -m training.agreement              # writes datasets/agreement/report.json
    python -m training.agreement --set edge   # writes datasets/agreement/edge_report.json
    python -m training.agreement --set review # writes datasets/agreement/review_report.json
    python -m training.agreement --set workorder
    python -m training.agreement --set boundary
    python -m training.agreement --set contrast-a  # and contrast-b
    python -m training.agreement --set natural-a   # and natural-b, natural2-a/b, workorder2-a/b, natural3-a/b, channels-a/b, proxy-a/b, mixed-a/b, workorder3-a/b, plain-a/b, aftermath-a/b, threads-a/b, dialogue-a/b, aftermath2-a/b, messy-a/b, long-a/b

The second annotator labelled a seeded random sample of 400 records
(``datasets/agreement/sample_ids.txt``) from the guidelines alone, without seeing
the corpus labels; their labels are in ``annotator2_part*.jsonl``. The ``edge`` set is
a seeded sample of 120 records of the third round (15 per ``*_edge`` shard), labelled
the same way for urgency, category and sentiment (``edge_annotator2.jsonl``); the
``review`` set is the same for the fourth round (15 per ``*_review`` shard, 5 per
``*_review2`` shard), ``workorder`` for its work orders (10 per ``*_workorder`` shard,
all heads and flags), ``boundary`` for the fifth round (10 per ``*_boundary`` shard), and
``contrast-a``/``contrast-b`` for the sixth round: two blind annotators, all heads and flags,
on 12 records per ``*_contrast`` shard; ``natural-a``/``natural-b`` the same for the seventh
round (12 per ``*_natural`` shard), ``natural2-a``/``natural2-b`` for the eighth (12 per
``*_natural2`` shard) and ``workorder2-a``/``workorder2-b`` for the ninth (12 per
``*_workorder2`` shard), ``natural3-a``/``natural3-b`` for the tenth (12 per ``*_natural3``
shard), ``channels-a``/``channels-b`` for the eleventh (12 per ``*_channels`` shard),
``proxy-a``/``proxy-b`` for the twelfth (12 per ``*_proxy`` shard), ``mixed-a``/``mixed-b`` for the
thirteenth (12 per ``*_mixed`` shard), ``workorder3-a``/``workorder3-b`` for the fourteenth (12 per
``*_workorder3`` shard), ``plain-a``/``plain-b`` for the fifteenth (12 per ``*_plain`` shard).
The ``audit-*`` sets are the urgency audit: two blind annotators (a, b) labelled urgency
for the 113 training rows whose out-of-fold same_day call disagreed most with their label
(``audit_disputed_ids.txt``) mixed with 113 random training rows (``audit_control_ids.txt``).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

from training.corpus import CORPUS_DIR, HEADS, RAW_DIR, _record_id, read_jsonl

AGREEMENT_DIR = CORPUS_DIR.parent / "agreement"


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa of two label sequences over the same items."""
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = collections.Counter(a), collections.Counter(b)
    expected = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


SETS = {"main": ("sample_ids.txt", "annotator2_part*.jsonl", "report.json"),
        "edge": ("edge_sample_ids.txt", "edge_annotator2.jsonl", "edge_report.json"),
        "review": ("review_sample_ids.txt", "review_annotator2*.jsonl", "review_report.json"),
        "workorder": ("workorder_sample_ids.txt", "workorder_annotator2.jsonl", "workorder_report.json"),
        "boundary": ("boundary_sample_ids.txt", "boundary_annotator2.jsonl", "boundary_report.json"),
        "audit-disputed-a": ("audit_disputed_ids.txt", "audit_annotator_a.jsonl", "audit_disputed_a_report.json"),
        "audit-disputed-b": ("audit_disputed_ids.txt", "audit_annotator_b.jsonl", "audit_disputed_b_report.json"),
        "audit-control-a": ("audit_control_ids.txt", "audit_annotator_a.jsonl", "audit_control_a_report.json"),
        "audit-control-b": ("audit_control_ids.txt", "audit_annotator_b.jsonl", "audit_control_b_report.json")}

# Rounds with two blind annotators (a, b) on one seeded sample, files named after the round.
TWO_ANNOTATOR_ROUNDS = ("contrast", "natural", "natural2", "workorder2", "natural3", "channels", "proxy", "mixed",
                        "workorder3", "plain", "aftermath", "threads", "dialogue", "aftermath2",
                        "messy", "long")
SETS.update({f"{name}-{x}": (f"{name}_sample_ids.txt", f"{name}_annotator_{x}.jsonl", f"{name}_{x}_report.json")
             for name in TWO_ANNOTATOR_ROUNDS for x in "ab"})


def agreement_report(raw_dir: Path = RAW_DIR, agreement_dir: Path = AGREEMENT_DIR, sample: str = "sample_ids.txt",
                     annotator: str = "annotator2_part*.jsonl") -> dict:
    """Kappa between the writers' labels as written (before adjudication) and annotator 2,
    on the heads (and flags) the annotator labelled."""
    gold = {_record_id(r["text"].strip()): r for path in sorted(raw_dir.glob("*.jsonl")) for r in read_jsonl(path)}
    second = {r["id"]: r for path in sorted(agreement_dir.glob(annotator)) for r in read_jsonl(path)}
    ids = [i for i in (agreement_dir / sample).read_text().split() if i in second and i in gold]
    report: dict = {"n": len(ids), "labels": "as written, before adjudication", "heads": {}, "flags": {}}
    for head in (h for h in HEADS if all(h in second[i] for i in ids)):
        a, b = [gold[i][head] for i in ids], [second[i][head] for i in ids]
        confusions = collections.Counter((x, y) for x, y in zip(a, b) if x != y)
        report["heads"][head] = {"kappa": round(cohen_kappa(a, b), 4),
                                 "agreement": round(sum(x == y for x, y in zip(a, b)) / len(ids), 4),
                                 "top_disagreements": [[f"{x} -> {y}", c] for (x, y), c in confusions.most_common(6)]}
    flagged = all("escalation" in second[i] for i in ids)
    flags = sorted({f for i in ids for f in gold[i]["escalation"] + second[i]["escalation"]}) if flagged else []
    for flag in flags:
        a = [str(flag in gold[i]["escalation"]) for i in ids]
        b = [str(flag in second[i]["escalation"]) for i in ids]
        report["flags"][flag] = {"kappa": round(cohen_kappa(a, b), 4), "corpus": a.count("True"),
                                 "second": b.count("True")}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.agreement", description=__doc__)
    parser.add_argument("--set", choices=sorted(SETS), default="main", help="which annotated sample (default: main)")
    sample, annotator, out = SETS[parser.parse_args(argv).set]
    report = agreement_report(sample=sample, annotator=annotator)
    (AGREEMENT_DIR / out).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
