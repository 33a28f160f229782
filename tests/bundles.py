"""Small bundles for tests, trained from a slice of the project corpus."""

from __future__ import annotations

import json
from pathlib import Path

from training.train import TrainConfig, train
from triage.features import FeatureConfig

ROOT = Path(__file__).resolve().parent.parent
CORPUS_TRAIN = ROOT / "datasets" / "corpus" / "train.jsonl"


def write_slice(path: Path, n: int = 400) -> Path:
    """The first ``n`` records of the corpus train split, as JSONL."""
    with open(CORPUS_TRAIN, encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
        for k, line in enumerate(src):
            if k >= n:
                break
            dst.write(line)
    return path


def build_small_bundle(workdir: Path, n: int = 400, **overrides) -> Path:
    data = write_slice(workdir / "slice.jsonl", n)
    config = TrainConfig(data=[str(data)], folds=3, name="small",
                         features=FeatureConfig(max_features=20_000, rule_states=0.1), **overrides)
    out = workdir / "bundle"
    train(config, out)
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text("utf-8").splitlines() if line.strip()]


TINY_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny_tickets.jsonl"


def train_tiny(out: Path, features: dict | None = None, **overrides) -> Path:
    """A four-head bundle from the 60-row fixture: character n-grams only, 2 folds."""
    config = TrainConfig(data=[str(TINY_FIXTURE)], folds=2, name="tiny",
                         features=FeatureConfig(**{"words": False, "max_features": 2000, "min_df": 1,
                                                   **(features or {})}), **overrides)
    train(config, out)
    return out


def read_tiny_rows() -> list[dict]:
    return read_jsonl(TINY_FIXTURE)
