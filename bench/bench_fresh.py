"""How a bundle and its rules do on records neither has seen; write bench/results/fresh.json.

    python bench/bench_fresh.py --model models/default --data datasets/raw/*_contrast.jsonl

Meant for a corpus round scored before it is merged or any rule is written from it (the
sixth round was scored with the bundle and rules of commit c87cd7d): the bundle's own
same_day decision, the rules alone, and for a sweep of same_day thresholds the model's
recall, how many of its misses the rules rescue, and the combined recall and precision.
That rescue rate on unseen text, not on the rows the rules were written from, says
whether the rules can buy a higher threshold. Every head is scored too (macro-F1,
accuracy, escalation flags; ``training.evaluate.evaluate_bundle``), which makes a round
written by new writers an estimate of how the bundle does on text written by others.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import triage  # noqa: E402
from training.evaluate import evaluate_bundle  # noqa: E402
from triage.normalize import normalize_text  # noqa: E402

THRESHOLDS = (0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def rate(pred: np.ndarray, gold: np.ndarray) -> dict:
    tp = int((pred & gold).sum())
    return {"recall": round(tp / max(int(gold.sum()), 1), 4), "precision": round(tp / max(int(pred.sum()), 1), 4),
            "caught": tp, "called": int(pred.sum())}


def summarize_heads(report: dict) -> dict:
    """Macro-F1 and accuracy per head, flag precision/recall and the review rate of an evaluation."""
    out = {head: {"macro_f1": sec["macro_f1"], "accuracy": sec["accuracy"]} for head, sec in report["heads"].items()}
    out["escalation"] = report.get("escalation", {})
    out["needs_review_rate"] = report["needs_review_rate"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--data", nargs="+", required=True, type=Path)
    parser.add_argument("--out", default="bench/results/fresh.json")
    args = parser.parse_args()
    rows = [json.loads(line) for path in args.data for line in path.open(encoding="utf-8") if line.strip()]
    model = triage.load(args.model)
    results = [r.to_dict() for r in model.score_batch([{"text": row["text"]} for row in rows])]
    gold = np.array([row["urgency"] == "same_day" for row in rows])
    final = np.array([r["urgency"]["label"] == "same_day" for r in results])
    probs = [{t["label"]: t["probability"] for t in r["urgency"]["top"]} for r in results]
    p = np.array([pr.get("same_day", 0.0) for pr in probs])
    argmax = np.array([max(pr, key=pr.get) == "same_day" for pr in probs])
    ruled = np.array([any(h.level == "same_day" for h in model.rules.match(normalize_text(row["text"]), row["text"]))
                      for row in rows])
    sweep = []
    for t in THRESHOLDS:
        alone = argmax | (p >= t)
        sweep.append({"threshold": t, "model_recall": rate(alone, gold)["recall"],
                      "model_misses": int((~alone & gold).sum()), "rescued_by_rules": int((~alone & gold & ruled).sum()),
                      "combined": rate(alone | ruled, gold)})
    report = {"model": str(args.model), "model_version": model.model_version, "data": [p.name for p in args.data],
              "rows": len(rows), "same_day": int(gold.sum()), "decision": rate(final, gold),
              "rules_alone": rate(ruled, gold), "heads": summarize_heads(evaluate_bundle(args.model, args.data)),
              "threshold_sweep": sweep}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(json.dumps({k: v for k, v in report.items() if k != "threshold_sweep"}, ensure_ascii=False))
    for row in sweep:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
