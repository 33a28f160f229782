"""``triage train --tier transformer`` argument handling (no torch needed)."""

from __future__ import annotations

import argparse

from training.cli import register_train
from training.transformer.cli import config_from_args


def _parse(argv):
    parser = argparse.ArgumentParser()
    register_train(parser.add_subparsers(dest="cmd"))
    return parser.parse_args(argv)


def test_defaults_use_the_builtin_backbone():
    args = _parse(["train", "--tier", "transformer", "--data", "a.jsonl", "--out", "models/tx"])
    config = config_from_args(args)
    assert config.backbone is None and config.layers == 4 and config.epochs == 8 and config.prune_vocab
    assert config.name == "tx" and config.serve == "int8" and config.resume
    assert config.int8_fp32_matmuls == 3


def test_options_reach_the_config():
    args = _parse(["train", "--tier", "transformer", "--data", "a.tsv", "--columns", "text,category", "--out", "m",
                   "--backbone", "/ckpt", "--layers", "0", "--no-prune-vocab", "--max-length", "256",
                   "--head-tokens", "64", "--epochs", "2", "--dev-data", "d.tsv", "--max-train-minutes", "5",
                   "--keep-fp32", "--no-resume", "--head", "category", "--int8-fp32-matmuls", "0"])
    config = config_from_args(args)
    assert config.backbone == "/ckpt" and config.layers is None and not config.prune_vocab
    assert (config.max_length, config.head_tokens, config.epochs) == (256, 64, 2)
    assert config.columns == ["text", "category"] and config.dev_data == ["d.tsv"]
    assert config.heads == {"category": "category"} and config.keep_fp32 and not config.resume
    assert config.max_train_minutes == 5 and config.int8_fp32_matmuls == 0


def test_fingerprint_ignores_threads_and_budget_only():
    from dataclasses import replace

    args = _parse(["train", "--tier", "transformer", "--data", "a.jsonl", "--out", "m"])
    config = config_from_args(args)
    fp = config.fingerprint("sha")
    assert replace(config, threads=1, max_train_minutes=3).fingerprint("sha") == fp
    assert replace(config, lr=1e-3).fingerprint("sha") != fp
    assert config.fingerprint("other") != fp


def test_distillation_options_reach_the_config():
    args = _parse(["train", "--tier", "transformer", "--data", "a.jsonl", "--out", "m", "--teacher", "models/deep",
                   "--unlabeled-data", "h1.csv", "h2.jsonl", "--distill-weight", "0.8",
                   "--distill-temperature", "3"])
    config = config_from_args(args)
    assert config.teacher == "models/deep" and config.unlabeled_data == ["h1.csv", "h2.jsonl"]
    assert (config.distill_weight, config.distill_temperature) == (0.8, 3.0)
