"""The project corpus is valid, deduplicated, split cleanly and covers every code."""

import collections

import pytest

from training.corpus import (CORPUS_DIR, HARD_CASE_TAGS, SPLITS, find_near_duplicates, read_jsonl,
                             validate_record)
from triage.taxonomy import load_taxonomy

HARD_CASE_GROUPS = {
    "resolved, denied or hypothetical hazard": ("resolved_hazard", "denied_hazard", "hypothetical_hazard"),
    "slow but working vs fully down": ("degraded_not_down",),
    "elevator noise vs people trapped": ("elevator_noise", "elevator_trapped"),
    "planned outage that overran": ("planned_outage_overrun",),
    "figurative anger": ("figurative_anger",),
    "look-alike flags": ("flag_lookalike", "denied_threat"),
    "praise": ("praise",),
}


@pytest.fixture(scope="module")
def splits():
    return {name: list(read_jsonl(CORPUS_DIR / f"{name}.jsonl")) for name in SPLITS}


@pytest.fixture(scope="module")
def records(splits):
    return [r for recs in splits.values() for r in recs]


def test_every_record_is_valid(records):
    taxonomy = load_taxonomy()
    problems = {r["id"]: validate_record(r, taxonomy) for r in records}
    assert not {k: v for k, v in problems.items() if v}


def test_corpus_is_large_enough_and_covers_every_code(records):
    taxonomy = load_taxonomy()
    assert len(records) >= 4000
    for head in ("category", "department", "urgency", "sentiment"):
        counts = collections.Counter(r[head] for r in records)
        for code in taxonomy.labels(head):
            assert counts[code] >= 100, (head, code, counts[code])
    flags = collections.Counter(f for r in records for f in r["escalation"])
    for flag in taxonomy.flags:
        assert flags[flag] >= 40, (flag, flags[flag])


def test_hard_cases_are_present(records):
    tags = collections.Counter(t for r in records for t in r["tags"])
    assert set(tags) <= set(HARD_CASE_TAGS)
    for group, members in HARD_CASE_GROUPS.items():
        assert sum(tags[t] for t in members) >= 50, group


def test_registers_domains_and_scripts_are_mixed(records):
    n = len(records)
    traditional = sum(r["script"] == "traditional" for r in records) / n
    assert 0.10 <= traditional <= 0.25
    assert len({r["domain"] for r in records}) == 8
    assert len({r["register"] for r in records}) == 4


def test_splits_are_disjoint_and_in_proportion(splits):
    ids = {name: {r["id"] for r in recs} for name, recs in splits.items()}
    texts = {name: {r["text"] for r in recs} for name, recs in splits.items()}
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not ids[a] & ids[b]
            assert not texts[a] & texts[b]
    total = sum(len(v) for v in splits.values())
    for name, share in SPLITS.items():
        assert abs(len(splits[name]) / total - share) < 0.02


def test_splits_are_stratified_by_urgency(splits):
    total = collections.Counter(r["urgency"] for recs in splits.values() for r in recs)
    n = sum(total.values())
    for recs in splits.values():
        counts = collections.Counter(r["urgency"] for r in recs)
        for code, c in total.items():
            assert abs(counts[code] / len(recs) - c / n) < 0.02


def test_no_near_duplicates_anywhere(records):
    assert find_near_duplicates([r["text"] for r in records]) == []
