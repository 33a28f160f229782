"""The project corpus: schema checks, near-duplicate search, splits and statistics.

Run ``python -m training.corpus check FILE...`` on a shard while writing it, and
``python -m training.corpus build`` to turn ``datasets/raw/*.jsonl`` into the fixed
``datasets/corpus/{train,dev,test}.jsonl`` splits.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Iterable, Iterator

from triage.taxonomy import load_taxonomy

HEADS = ("category", "department", "urgency", "sentiment")
DOMAINS = (
    "property", "telecom", "utilities", "ecommerce_logistics",
    "car_aftersales", "hotel_restaurant", "citycard_payment", "bank",
)
SCRIPTS = ("simplified", "traditional")
REGISTERS = ("hotline_summary", "web_form", "chat", "letter")
HARD_CASE_TAGS = (
    "resolved_hazard", "denied_hazard", "hypothetical_hazard", "degraded_not_down",
    "elevator_noise", "elevator_trapped", "planned_outage_overrun",
    "figurative_anger", "flag_lookalike", "denied_threat", "praise",
    "buried_emergency", "symptom_only", "made_safe", "past_incident",
    "mixed_feedback", "colloquial_anger", "category_boundary", "urgency_contrast",
)
RAW_FIELDS = ("text", *HEADS, "escalation", "domain", "script", "register")
SPLITS = {"train": 0.70, "dev": 0.15, "test": 0.15}
NEAR_DUP_JACCARD = 0.6
SHINGLE = 5

ROOT = Path(__file__).resolve().parent.parent
RAW_DIR = ROOT / "datasets" / "raw"
CORPUS_DIR = ROOT / "datasets" / "corpus"
CORRECTIONS = ROOT / "datasets" / "corrections.jsonl"


def read_jsonl(path: Path) -> Iterator[dict]:
    """Yield records of a JSONL file; a bad line raises with its line number."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {exc}") from exc


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def validate_record(rec: dict, taxonomy=None) -> list[str]:
    """Return the problems of one record (empty when it is valid)."""
    taxonomy = taxonomy or load_taxonomy()
    problems = [f"missing field {f!r}" for f in RAW_FIELDS if f not in rec]
    if problems:
        return problems
    if not isinstance(rec["text"], str) or len(rec["text"].strip()) < 4:
        problems.append("text is empty or too short")
    for head in HEADS:
        if rec[head] not in taxonomy.labels(head):
            problems.append(f"{head}={rec[head]!r} is not a {head} code")
    flags = rec["escalation"]
    if not isinstance(flags, list) or any(f not in taxonomy.flags for f in flags):
        problems.append(f"escalation={flags!r} must be a list of flag codes")
    elif len(set(flags)) != len(flags):
        problems.append("escalation lists a flag twice")
    if rec["domain"] not in DOMAINS:
        problems.append(f"domain={rec['domain']!r} not in {DOMAINS}")
    if rec["script"] not in SCRIPTS:
        problems.append(f"script={rec['script']!r} not in {SCRIPTS}")
    if rec["register"] not in REGISTERS:
        problems.append(f"register={rec['register']!r} not in {REGISTERS}")
    for tag in rec.get("tags", []):
        if tag not in HARD_CASE_TAGS:
            problems.append(f"unknown tag {tag!r}")
    return problems


def shingles(text: str, n: int = SHINGLE) -> frozenset[str]:
    compact = "".join(text.split())
    if len(compact) <= n:
        return frozenset([compact])
    return frozenset(compact[i:i + n] for i in range(len(compact) - n + 1))


def find_near_duplicates(texts: list[str], threshold: float = NEAR_DUP_JACCARD) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard) of texts whose character 5-gram Jaccard is >= threshold.

    An inverted index over shingles limits the exact comparison to candidate pairs
    that share enough shingles to possibly reach the threshold.
    """
    sets = [shingles(t) for t in texts]
    index: dict[str, list[int]] = collections.defaultdict(list)
    for i, s in enumerate(sets):
        for sh in s:
            index[sh].append(i)
    pairs = []
    for i, s in enumerate(sets):
        shared: collections.Counter = collections.Counter()
        for sh in s:
            for j in index[sh]:
                if j > i:
                    shared[j] += 1
        for j, inter in shared.items():
            union = len(s) + len(sets[j]) - inter
            jac = inter / union
            if jac >= threshold:
                pairs.append((i, j, jac))
    return pairs


def nearest_neighbour_similarity(texts: list[str]) -> list[float]:
    """Each text's highest 5-gram Jaccard with any other text."""
    sets = [shingles(t) for t in texts]
    index: dict[str, list[int]] = collections.defaultdict(list)
    for i, s in enumerate(sets):
        for sh in s:
            index[sh].append(i)
    best = [0.0] * len(texts)
    for i, s in enumerate(sets):
        shared: collections.Counter = collections.Counter()
        for sh in s:
            for j in index[sh]:
                if j != i:
                    shared[j] += 1
        for j, inter in shared.items():
            jac = inter / (len(s) + len(sets[j]) - inter)
            best[i] = max(best[i], jac)
    return best


def distinct_ngram_ratio(texts: list[str], n: int) -> float:
    """Distinct character n-grams over all n-grams (higher is more varied)."""
    total, seen = 0, set()
    for t in texts:
        for i in range(len(t) - n + 1):
            seen.add(t[i:i + n])
            total += 1
    return len(seen) / total if total else 0.0


def count_labels(records: list[dict]) -> dict:
    counts = {head: collections.Counter(r[head] for r in records) for head in HEADS}
    counts["escalation"] = collections.Counter(f for r in records for f in r["escalation"])
    for field in ("domain", "script", "register"):
        counts[field] = collections.Counter(r[field] for r in records)
    counts["tags"] = collections.Counter(t for r in records for t in r.get("tags", []))
    return {k: dict(sorted(v.items())) for k, v in counts.items()}


def check_files(paths: list[Path]) -> int:
    """Print problems, counts and near-duplicates of raw shards; return the problem count."""
    taxonomy = load_taxonomy()
    records, n_problems = [], 0
    for path in paths:
        for lineno, rec in enumerate(read_jsonl(path), 1):
            for problem in validate_record(rec, taxonomy):
                print(f"{path}:{lineno}: {problem}")
                n_problems += 1
            records.append(rec)
    texts = [r.get("text", "") for r in records]
    dups = find_near_duplicates(texts)
    for i, j, jac in dups[:50]:
        print(f"near-duplicate (jaccard {jac:.2f}):\n  {texts[i]}\n  {texts[j]}")
    print(f"{len(records)} records, {n_problems} problems, {len(dups)} near-duplicate pairs")
    print(json.dumps(count_labels([r for r in records if not validate_record(r, taxonomy)]),
                     ensure_ascii=False, indent=1))
    return n_problems


def _record_id(text: str) -> str:
    return "c" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def dedupe(records: list[dict]) -> tuple[list[dict], list[tuple[dict, dict, float]]]:
    """Drop exact and near-duplicates, keeping the first record of each group."""
    texts = [r["text"] for r in records]
    dropped: set[int] = set()
    removed = []
    for i, j, jac in sorted(find_near_duplicates(texts)):
        if i in dropped or j in dropped:
            continue
        dropped.add(j)
        removed.append((records[i], records[j], jac))
    return [r for k, r in enumerate(records) if k not in dropped], removed


def assign_splits(records: list[dict], seed: int = 20261124) -> dict[str, list[dict]]:
    """70/15/15 split, stratified by (urgency, domain), deterministic for a seed."""
    strata: dict[tuple, list[dict]] = collections.defaultdict(list)
    for rec in sorted(records, key=lambda r: r["id"]):
        strata[(rec["urgency"], rec["domain"])].append(rec)
    rng = random.Random(seed)
    out: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for key in sorted(strata):
        group = strata[key]
        rng.shuffle(group)
        n = len(group)
        n_dev = round(n * SPLITS["dev"])
        n_test = round(n * SPLITS["test"])
        out["test"].extend(group[:n_test])
        out["dev"].extend(group[n_test:n_test + n_dev])
        out["train"].extend(group[n_test + n_dev:])
    for name in out:
        out[name].sort(key=lambda r: r["id"])
    return out


def apply_corrections(records: list[dict], path: Path = CORRECTIONS) -> int:
    """Apply adjudicated label corrections ({id, field, from, to, reason}); return how many.

    A correction whose ``from`` no longer matches the record is an error, so a raw
    shard edited after adjudication cannot be silently overwritten.
    """
    if not path.exists():
        return 0
    by_id = {r["id"]: r for r in records}
    applied = 0
    for fix in read_jsonl(path):
        rec = by_id.get(fix["id"])
        if rec is None:
            raise ValueError(f"correction for unknown record {fix['id']}")
        current = sorted(rec[fix["field"]]) if fix["field"] == "escalation" else rec[fix["field"]]
        if current != fix["from"]:
            raise ValueError(f"correction {fix['id']}.{fix['field']}: expected {fix['from']!r}, found {current!r}")
        rec[fix["field"]] = fix["to"]
        applied += 1
    return applied


def existing_splits(corpus_dir: Path = CORPUS_DIR) -> dict[str, str]:
    """The split each already-published record id belongs to (splits never move)."""
    out = {}
    for name in SPLITS:
        path = corpus_dir / f"{name}.jsonl"
        if path.exists():
            out.update({r["id"]: name for r in read_jsonl(path)})
    return out


def build_corpus(raw_dir: Path = RAW_DIR, out_dir: Path = CORPUS_DIR) -> dict:
    """Validate, deduplicate, correct and split the raw shards; return build statistics.

    Records already in a published split stay there; only new records are assigned,
    stratified by (urgency, domain).
    """
    taxonomy = load_taxonomy()
    records, invalid = [], []
    for path in sorted(raw_dir.glob("*.jsonl")):
        for rec in read_jsonl(path):
            problems = validate_record(rec, taxonomy)
            if problems:
                invalid.append((path.name, rec.get("text", ""), problems))
                continue
            rec = {k: rec[k] for k in (*RAW_FIELDS, "tags") if k in rec}
            rec["text"] = rec["text"].strip()
            rec["id"] = _record_id(rec["text"])
            rec.setdefault("tags", [])
            records.append(rec)
    records.sort(key=lambda r: r["id"])
    kept, removed = dedupe(records)
    corrected = apply_corrections(kept)
    for rec in kept:
        problems = validate_record(rec, taxonomy)
        if problems:
            raise ValueError(f"record {rec['id']} invalid after corrections: {problems}")
    published = existing_splits(out_dir)
    splits = assign_splits([r for r in kept if r["id"] not in published])
    for rec in kept:
        if rec["id"] in published:
            splits[published[rec["id"]]].append(rec)
    for name, recs in splits.items():
        recs.sort(key=lambda r: r["id"])
        write_jsonl(out_dir / f"{name}.jsonl", (_ordered(r) for r in recs))
    return {"raw": len(records) + len(invalid), "invalid": len(invalid),
            "near_duplicates_removed": len(removed), "corrections_applied": corrected, "kept": len(kept),
            "splits": {k: len(v) for k, v in splits.items()}}


def _ordered(rec: dict) -> dict:
    keys = ("id", "text", *HEADS, "escalation", "domain", "script", "register", "tags")
    return {k: rec[k] for k in keys}


def corpus_statistics(corpus_dir: Path = CORPUS_DIR) -> dict:
    """Counts per label and split, diversity and near-duplicate measures of the built corpus."""
    splits = {name: list(read_jsonl(corpus_dir / f"{name}.jsonl")) for name in SPLITS}
    records = [r for recs in splits.values() for r in recs]
    texts = [r["text"] for r in records]
    nn = sorted(nearest_neighbour_similarity(texts))
    opener_df: collections.Counter = collections.Counter(t[:8] for t in texts)
    gram_df: collections.Counter = collections.Counter()
    for t in texts:
        gram_df.update({t[i:i + 10] for i in range(len(t) - 9)})
    lengths = sorted(len(t) for t in texts)
    return {
        "records": len(records),
        "splits": {name: len(recs) for name, recs in splits.items()},
        "labels": count_labels(records),
        "labels_by_split": {name: count_labels(recs) for name, recs in splits.items()},
        "length": {"min": lengths[0], "median": lengths[len(lengths) // 2],
                   "p90": lengths[int(len(lengths) * 0.9)], "max": lengths[-1]},
        "distinct_ngram_ratio": {n: round(distinct_ngram_ratio(texts, n), 4) for n in (1, 2, 3, 4)},
        "nearest_neighbour_jaccard": {
            "mean": round(sum(nn) / len(nn), 4),
            **{f"p{q}": round(nn[min(len(nn) - 1, int(len(nn) * q / 100))], 4) for q in (50, 90, 99)},
            "max": round(nn[-1], 4),
            "histogram": {f"{lo / 10:.1f}-{(lo + 1) / 10:.1f}": sum(1 for v in nn if lo / 10 <= v < (lo + 1) / 10)
                          for lo in range(10)},
        },
        "near_duplicate_pairs": len(find_near_duplicates(texts)),
        "most_repeated_openers": opener_df.most_common(10),
        "most_repeated_10grams": gram_df.most_common(10),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.corpus", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser("check", help="validate raw shards and show counts")
    check.add_argument("files", nargs="+", type=Path)
    sub.add_parser("build", help="deduplicate and split datasets/raw into datasets/corpus")
    stats = sub.add_parser("stats", help="write datasets/STATS.json (counts, diversity, near-duplicates)")
    stats.add_argument("--out", type=Path, default=ROOT / "datasets" / "STATS.json")
    args = parser.parse_args(argv)
    if args.cmd == "check":
        return 1 if check_files(args.files) else 0
    if args.cmd == "stats":
        result = corpus_statistics()
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", "utf-8")
        print(json.dumps({k: result[k] for k in ("records", "splits", "distinct_ngram_ratio",
                                                  "nearest_neighbour_jaccard", "near_duplicate_pairs")},
                         ensure_ascii=False, indent=1))
        return 0
    print(json.dumps(build_corpus(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
