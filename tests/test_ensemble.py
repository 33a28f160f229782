"""Ensemble bundles: per-head weights chosen on a dev split, served through ``triage.load``.

The transformer member is the hand-built ONNX graph of test_transformer (no torch
needed); the linear member is trained on the same kind of synthetic rows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import triage
from tests.test_transformer import _handmade_bundle, _rows
from training.ensemble import EnsembleConfig, build_ensemble, choose_weight
from training.train import TrainConfig, train
from triage.bundle import read_manifest
from triage.errors import BundleError
from triage.features import FeatureConfig
from triage.model import sharpen
from triage.normalize import normalize_text


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    train_file = _write(root / "train.jsonl", _rows(150))
    dev_file = _write(root / "dev.jsonl", _rows(90, seed=2))
    linear = root / "linear"
    train(TrainConfig(data=[str(train_file)], folds=2, name="lin",
                      features=FeatureConfig(words=False, max_features=2000, min_df=1)), linear)
    transformer = root / "transformer"
    _handmade_bundle(transformer, fp32_noise=0.5)
    return root, linear, transformer, dev_file


@pytest.fixture(scope="module")
def ensemble(members):
    root, linear, transformer, dev_file = members
    out = root / "ens"
    manifest = build_ensemble(EnsembleConfig(linear=str(linear), transformer=str(transformer),
                                             dev_data=[str(dev_file)], name="ens"), out)
    return out, manifest


def test_choose_weight_follows_the_better_member():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    good = np.full((200, 3), 0.1)
    good[np.arange(200), y] = 0.8
    noise = rng.dirichlet(np.ones(3), 200)
    labels = ["a", "b", "c"]
    assert choose_weight(y, noise, good, labels, (0.0, 0.5, 1.0))[0] > 0
    assert choose_weight(y, good, noise, labels, (0.0, 0.5, 1.0))[0] < 1
    weight, grid = choose_weight(y, good, good, labels, (0.0, 0.5, 1.0))
    assert len(grid) == 3 and all(g["macro_f1"] == grid[0]["macro_f1"] for g in grid)


def test_choose_weight_minimises_dev_log_loss_even_where_macro_f1_disagrees():
    """The linear member ranks every row right but timidly; the transformer is confidently wrong on 10 %."""
    y = np.array([0, 1] * 50)
    linear = np.where(np.eye(2)[y] > 0, 0.7, 0.3)
    transformer = np.where(np.eye(2)[y] > 0, 0.99, 0.01)
    transformer[:10] = transformer[:10, ::-1]
    weight, grid = choose_weight(y, linear, transformer, ["a", "b"], (0.0, 0.5, 1.0))
    by_weight = {g["weight"]: g for g in grid}
    assert max(grid, key=lambda g: g["macro_f1"])["weight"] == 0.0
    assert weight == 0.5 and by_weight[0.5]["log_loss"] == min(g["log_loss"] for g in grid)


def test_weight_has_the_lowest_dev_log_loss_of_the_grid(ensemble):
    _, manifest = ensemble
    assert manifest["tier"] == "ensemble"
    for head, m in manifest["metrics"]["dev"]["heads"].items():
        assert set(m["weights"]) <= {"linear", "transformer"}
        assert abs(sum(m["weights"].values()) - 1) < 1e-6
        assert {g["weight"] for g in m["grid"]} == {round(k / 10, 1) for k in range(11)}
        chosen = next(g for g in m["grid"] if g["weight"] == m["weights"].get("transformer", 0.0))
        assert chosen["log_loss"] == min(g["log_loss"] for g in m["grid"]), head


def test_int8_agreement_of_served_labels_is_recorded_when_the_fp32_file_ships(members, tmp_path):
    _, linear, transformer, dev_file = members
    manifest = build_ensemble(EnsembleConfig(linear=str(linear), transformer=str(transformer), dev_data=[str(dev_file)],
                                             grid=(0.5,), name="half"), tmp_path / "half")
    parts = {"linear": triage.load(linear), "transformer": triage.load(transformer),
             "fp32": triage.load(transformer, onnx_file="encoder/model.fp32.onnx")}
    texts = [normalize_text(json.loads(line)["text"]) for line in dev_file.read_text("utf-8").splitlines()]
    probs = {name: m.predict_proba(texts) for name, m in parts.items()}
    mixed_heads = [h for h, spec in manifest["heads"].items() if spec["weights"].get("transformer", 0) > 0]
    assert mixed_heads == ["category", "urgency"]
    for head in mixed_heads:
        spec, got = manifest["heads"][head], manifest["metrics"]["dev"]["heads"][head]["int8_agreement"]

        def served(transformer_probs, head=head, spec=spec):
            mixed = 0
            for name, weight in spec["weights"].items():
                p = transformer_probs if name == "transformer" else probs[name][head]
                order = [parts[name].heads[head].labels.index(lb) for lb in spec["labels"]]
                mixed = mixed + weight * p[:, order].astype(np.float64)
            return sharpen(mixed, spec["temperature"]).argmax(1)

        assert got["served"] == round(float((served(probs["transformer"][head])
                                             == served(probs["fp32"][head])).mean()), 4)
        assert got["transformer"] == round(float((probs["transformer"][head].argmax(1)
                                                  == probs["fp32"][head].argmax(1)).mean()), 4)
        assert got["transformer"] < 1.0


def test_ensemble_keeps_the_linear_members_same_day_decision_as_a_floor(tmp_path):
    rows = _rows(240, seed=7)
    for i, row in enumerate(rows):
        if row["urgency"] == "normal" and i % 3 == 0:
            row["urgency"] = "within_24h"
    train_file, dev_file = _write(tmp_path / "train.jsonl", rows[:180]), _write(tmp_path / "dev.jsonl", rows[180:])
    linear = tmp_path / "linear"
    train(TrainConfig(data=[str(train_file)], folds=2, name="lin", flag_heads=False,
                      features=FeatureConfig(words=False, max_features=2000, min_df=1)), linear)
    transformer = tmp_path / "transformer"
    _handmade_bundle(transformer, urgency=("same_day", "within_24h", "normal"))
    manifest = build_ensemble(EnsembleConfig(linear=str(linear), transformer=str(transformer),
                                             dev_data=[str(dev_file)], grid=(1.0,), same_day_recall=0.0,
                                             name="floor"), tmp_path / "ens")  # its own threshold catches little
    assert manifest["heads"]["urgency"]["decision"]["member_floor"] == "linear"
    weights = manifest["heads"]["urgency"]["weights"]
    assert weights["transformer"] == 1.0 and weights.get("linear", 0.0) == 0.0
    assert (tmp_path / "ens" / "linear" / "manifest.json").is_file()  # kept for the floor alone

    texts = [r["text"] for r in rows[180:]]
    served = [r.to_dict()["urgency"] for r in triage.load(tmp_path / "ens").score_batch(texts)]
    alone = [r.to_dict()["urgency"] for r in triage.load(linear).score_batch(texts)]
    assert any(a["label"] == "same_day" for a in alone)
    for got, lin in zip(served, alone):
        if lin["label"] == "same_day":
            assert got["label"] == "same_day"
    assert any(reason["source"] == "member" for got in served for reason in got["reasons"])

    manifest_path = tmp_path / "ens" / "manifest.json"
    broken = json.loads(manifest_path.read_text("utf-8"))
    broken["heads"]["urgency"]["decision"]["member_floor"] = "transformer"  # it has no same_day decision
    manifest_path.write_text(json.dumps(broken), "utf-8")
    with pytest.raises(BundleError, match="member_floor 'transformer'"):
        triage.load(tmp_path / "ens", verify=False)


def test_onnx_file_must_be_one_the_bundle_ships(members):
    _, linear, transformer, _ = members
    with pytest.raises(BundleError, match="ships no ONNX file"):
        triage.load(transformer, onnx_file="../elsewhere.onnx")
    with pytest.raises(BundleError, match="is linear"):
        triage.load(linear, onnx_file="encoder/model.fp32.onnx")


def test_loaded_ensemble_mixes_member_probabilities(ensemble, members):
    out, manifest = ensemble
    _, linear, transformer, _ = members
    model = triage.load(out)
    parts = {"linear": triage.load(linear), "transformer": triage.load(transformer)}
    texts = [normalize_text(r["text"]) for r in _rows(40, seed=5)]
    got = model.predict_proba(texts)
    member_probs = {name: m.predict_proba(texts) for name, m in parts.items()}
    for head, spec in manifest["heads"].items():
        mixed = 0
        for name, weight in spec["weights"].items():
            order = [parts[name].heads[head].labels.index(lb) for lb in spec["labels"]]
            mixed = mixed + weight * member_probs[name][head][:, order].astype(np.float64)
        np.testing.assert_allclose(got[head], sharpen(mixed, spec["temperature"]), atol=1e-6)


def test_ensemble_scores_tickets_with_thresholds_and_due_time(ensemble):
    out, manifest = ensemble
    model = triage.load(out)
    res = model.score({"text": "信号很差，马上处理", "received_at": "2026-11-24T10:00:00+08:00"}).to_dict()
    assert res["model_version"] == manifest["model_version"]
    assert res["category"]["label"] in manifest["heads"]["category"]["labels"]
    assert res["urgency"]["label"] in ("normal", "same_day") and res["due_at"] is not None
    threshold = manifest["heads"]["category"]["thresholds"][res["category"]["label"]]
    assert res["category"]["needs_review"] == (res["category"]["confidence"] < threshold)
    batch = model.score_batch(["退款没有到账", ""], errors="return")
    assert isinstance(batch[1], triage.InvalidTicketError)


def test_tampered_member_file_is_refused(ensemble, tmp_path):
    out, _ = ensemble
    copy = tmp_path / "ens"
    shutil.copytree(out, copy)
    member_file = next(p for p in (copy / "linear").rglob("*.onnx"))
    member_file.write_bytes(member_file.read_bytes()[:-10])
    with pytest.raises(BundleError, match="corrupt or truncated"):
        triage.load(copy)


def test_weights_must_sum_to_one(ensemble, tmp_path):
    out, _ = ensemble
    copy = tmp_path / "ens"
    shutil.copytree(out, copy)
    manifest = read_manifest(copy)
    head = next(iter(manifest["heads"]))
    member = next(iter(manifest["members"]))
    manifest["heads"][head]["weights"] = {member: 0.7}
    (copy / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(BundleError, match="sum to 1"):
        triage.load(copy)


def test_members_must_be_of_their_tier(members, tmp_path):
    _, linear, transformer, dev_file = members
    with pytest.raises(ValueError, match="not a linear"):
        build_ensemble(EnsembleConfig(linear=str(transformer), transformer=str(linear), dev_data=[str(dev_file)]),
                       tmp_path / "x")


def test_cli_builds_an_ensemble_and_serving_needs_no_torch(members, tmp_path):
    _, linear, transformer, dev_file = members
    out = tmp_path / "cli-ens"
    run = subprocess.run([sys.executable, "-m", "triage.cli", "ensemble", "--linear", str(linear),
                          "--transformer", str(transformer), "--dev-data", str(dev_file), "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "category: weights" in run.stdout and (out / "manifest.json").is_file()
    code = (f"import sys, json, triage; m = triage.load({str(out)!r}); m.score('退款没有到账'); "
            "print(json.dumps([k for k in ('torch', 'transformers') if k in sys.modules]))")
    check = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(check.stdout) == []
    bad = subprocess.run([sys.executable, "-m", "triage.cli", "ensemble", "--linear", str(transformer),
                          "--transformer", str(linear), "--dev-data", str(dev_file), "--out", str(tmp_path / "y")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not a linear" in bad.stderr
