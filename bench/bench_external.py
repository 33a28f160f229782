"""How a bundle trained on the project corpus does on real text written by other people.

    python bench/bench_external.py --model models/default --out bench/results/external.json

The corpus in ``datasets/`` is synthetic; the default model will be judged on
complaints written by others. This benchmark scores the public data under
``../shared/datasets/public/`` (never trained on, never copied) with the bundle as
served and compares against labels mapped to the default taxonomy:

- **COCC** telecom work orders (real hotline summaries): the five of its eight
  categories that map onto one default category by the definitions in
  ``triage/resources/taxonomy.json`` (网络问题 network, 费用问题 billing,
  营销活动问题 and 不知情定制问题 marketing, 业务办理问题 business_process). Its
  服务问题, 信息安全问题 and 业务使用问题 mix several of ours (an agent hanging up, a
  promised data allowance, a number blocked as a spam sender) and are left out.
- **Reviews** (hotel and food-delivery, positive / negative): sentiment polarity.
  A positive review should get ``positive``; a negative one ``negative`` or ``angry``.
  ``neutral`` counts as a miss and is also reported on its own.
- **Weibo posts** (SMP2020-EWECT, general topics): ``angry`` recall on posts labelled
  angry, and how often a happy or neutral post is called angry. A different register
  from complaints, so read it as a stress test.

The mapping was written from the taxonomy definitions before any score was seen.
Nothing here feeds training or thresholds. Exits 0 with a note when the data is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from triage.model import load  # noqa: E402
from triage.normalize import normalize_text  # noqa: E402

PUBLIC = ROOT.parent / "shared" / "datasets" / "public"
COCC_TO_CATEGORY = {"网络问题": "network", "费用问题": "billing", "营销活动问题": "marketing",
                    "不知情定制问题": "marketing", "业务办理问题": "business_process"}
REVIEWS = ("ChnSentiCorp_htl_all.csv", "waimai_10k.csv")
WEIBO = "smp2020_ewect_usual_test.json"


def predict(model, texts: list[str], head: str) -> list[str]:
    """Labels of one head for texts that normalise to something; ``None`` for the rest."""
    norm = []
    for t in texts:
        try:
            norm.append(normalize_text(t))
        except ValueError:
            norm.append(None)
    keep = [i for i, t in enumerate(norm) if t]
    probs = model.predict_proba([norm[i] for i in keep])[head]
    labels = model.heads[head].labels
    out: list[str | None] = [None] * len(texts)
    for i, row in zip(keep, probs.argmax(1)):
        out[i] = labels[row]
    return out


def eval_cocc(model, path: Path) -> dict:
    rows = [ln.split("\t") for ln in path.read_text("utf-8").splitlines() if ln.strip()]
    rows = [(t, COCC_TO_CATEGORY[lb]) for t, lb in rows if lb in COCC_TO_CATEGORY]
    got = predict(model, [t for t, _ in rows], "category")
    pairs = [(want, g) for (_, want), g in zip(rows, got) if g is not None]
    per_class = {}
    for label in sorted({w for w, _ in pairs}):
        preds = Counter(g for w, g in pairs if w == label)
        n = sum(preds.values())
        tp = preds[label]
        predicted = sum(1 for _, g in pairs if g == label)
        per_class[label] = {"n": n, "recall": round(tp / n, 4),
                            "precision_within_mapped": round(tp / predicted, 4) if predicted else None,
                            "predicted_as": dict(preds.most_common(4))}
    return {"data": path.name, "n": len(pairs), "skipped_empty": len(rows) - len(pairs),
            "accuracy": round(float(np.mean([w == g for w, g in pairs])), 4),
            "mean_recall": round(float(np.mean([c["recall"] for c in per_class.values()])), 4),
            "per_class": per_class}


def eval_reviews(model, paths: list[Path]) -> dict:
    out = {}
    for path in paths:
        with path.open(encoding="utf-8", newline="") as f:
            rows = [(r["review"], r["label"]) for r in csv.DictReader(f) if r.get("review")]
        got = predict(model, [t for t, _ in rows], "sentiment")
        pairs = [(lb, g) for (_, lb), g in zip(rows, got) if g is not None]
        pos = [g for lb, g in pairs if lb == "1"]
        neg = [g for lb, g in pairs if lb == "0"]
        hit_pos = sum(g == "positive" for g in pos)
        hit_neg = sum(g in ("negative", "angry") for g in neg)
        polar = [(lb, g) for lb, g in pairs if g != "neutral"]
        out[path.stem] = {
            "n": len(pairs), "positive_reviews": len(pos), "negative_reviews": len(neg),
            "accuracy": round((hit_pos + hit_neg) / len(pairs), 4),
            "balanced_accuracy": round((hit_pos / len(pos) + hit_neg / len(neg)) / 2, 4),
            "positive_recall": round(hit_pos / len(pos), 4), "negative_recall": round(hit_neg / len(neg), 4),
            "neutral_share": round(sum(g == "neutral" for _, g in pairs) / len(pairs), 4),
            "polarity_accuracy_when_not_neutral": round(
                sum((lb == "1") == (g == "positive") for lb, g in polar) / len(polar), 4) if polar else None,
            "predicted": dict(Counter(g for _, g in pairs))}
    return out


def eval_weibo(model, path: Path) -> dict:
    rows = [(r["content"], r["label"]) for r in json.loads(path.read_text("utf-8")) if r.get("content")]
    got = predict(model, [t for t, _ in rows], "sentiment")
    pairs = [(lb, g) for (_, lb), g in zip(rows, got) if g is not None]
    angry = [g for lb, g in pairs if lb == "angry"]
    calm = [g for lb, g in pairs if lb in ("happy", "neutral")]
    called_angry = [lb for lb, g in pairs if g == "angry"]
    return {"data": path.name, "n": len(pairs), "angry_posts": len(angry),
            "angry_recall": round(sum(g == "angry" for g in angry) / len(angry), 4),
            "angry_or_negative_on_angry_posts": round(sum(g in ("angry", "negative") for g in angry) / len(angry), 4),
            "angry_precision": round(sum(lb == "angry" for lb in called_angry) / len(called_angry), 4)
            if called_angry else None,
            "calm_posts_called_angry": round(sum(g == "angry" for g in calm) / len(calm), 4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "models" / "default"))
    p.add_argument("--data-dir", type=Path, default=PUBLIC)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "external.json"))
    args = p.parse_args()
    if not args.data_dir.is_dir():
        print(f"skipped: {args.data_dir} is absent")
        return 0
    model = load(args.model)
    started = time.perf_counter()
    result: dict = {"model": model.model_version, "tier": model.tier,
                    "command": f"python bench/bench_external.py --model {args.model}"}
    heads = set(model.heads)
    if "category" in heads and (args.data_dir / "cocc_dev.tsv").is_file():
        result["cocc_category"] = eval_cocc(model, args.data_dir / "cocc_dev.tsv")
    reviews = [args.data_dir / f for f in REVIEWS if (args.data_dir / f).is_file()]
    if "sentiment" in heads and reviews:
        result["review_sentiment"] = eval_reviews(model, reviews)
    if "sentiment" in heads and (args.data_dir / WEIBO).is_file():
        result["weibo_anger"] = eval_weibo(model, args.data_dir / WEIBO)
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
