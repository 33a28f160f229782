"""ONNX export of linear heads and writing of model bundles.

A head is ``softmax((sum_k w_k * W[i_k] + b) / T)`` over a padded sparse batch:
``indices`` (int64, [N, L]) and ``weights`` (float32, [N, L]); the padding index is
one past the vocabulary and points at a zero row of ``W``. This keeps the feature
pass in Python (shared by all heads) and gives ONNX only the arithmetic.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from triage.bundle import MANIFEST, SCHEMA_VERSION, sha256_file

OPSET = 17


def linear_head_to_onnx(coef: np.ndarray, intercept: np.ndarray, temperature: float, name: str) -> onnx.ModelProto:
    """Build the ONNX graph of one head from a (n_classes, n_features) coefficient matrix.

    The temperature is folded into the weights (softmax((Wx + b) / T) = softmax(W'x + b')),
    so a head is four nodes: Gather, Einsum, Add, Softmax.
    """
    n_classes, n_features = coef.shape
    table = np.zeros((n_features + 1, n_classes), dtype=np.float32)
    table[:n_features] = coef.T / temperature
    inits = [numpy_helper.from_array(table, "W"),
             numpy_helper.from_array((intercept / temperature).astype(np.float32), "b")]
    nodes = [
        helper.make_node("Gather", ["W", "indices"], ["rows"], axis=0),
        helper.make_node("Einsum", ["weights", "rows"], ["summed"], equation="nl,nlc->nc"),
        helper.make_node("Add", ["summed", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, f"triage_{name}",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["N", "L"]),
         helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["N", "L"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="triage")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def library_versions() -> dict:
    names = ("numpy", "scipy", "scikit-learn", "onnx", "onnxruntime", "jieba", "rjieba", "opencc")
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_bundle(out_dir: Path, *, featurizer, heads: dict, rules_path: Path | None,
                 userdict_path: Path | None, extra: dict) -> dict:
    """Write a complete bundle directory and return its manifest.

    ``heads`` maps a head name to a dict with ``labels``, ``coef``, ``intercept``,
    ``temperature``, ``thresholds`` and optional ``decision`` and ``metrics``.
    The directory is written beside the target and renamed into place, so a
    reader never sees a half-written bundle.
    """
    out_dir = Path(out_dir)
    tmp = start_bundle(out_dir, "heads", "features", "lexicons")
    grams = [None] * featurizer.n_features
    for gram, idx in featurizer.vocabulary.items():
        grams[idx] = gram
    (tmp / "features" / "vocabulary.json").write_text(
        json.dumps({"features": grams, "idf": [round(float(v), 9) for v in featurizer.idf]},
                   ensure_ascii=False, separators=(",", ":")), "utf-8")
    manifest_heads = {}
    for name, spec in heads.items():
        rel = f"heads/{name.replace(':', '_')}.onnx"
        graph = linear_head_to_onnx(spec["coef"], spec["intercept"], spec["temperature"], name)
        onnx.save(graph, str(tmp / rel))
        manifest_heads[name] = {
            "labels": list(spec["labels"]), "onnx": rel, "temperature": spec["temperature"],
            "thresholds": spec["thresholds"], "decision": spec.get("decision", {}),
            "metrics": spec.get("metrics", {}),
        }
    features = {"config": featurizer.config.to_dict(), "vocabulary": "features/vocabulary.json",
                "n_features": featurizer.n_features}
    flag_heads = {k: manifest_heads.pop(k) for k in list(manifest_heads) if k.startswith("flag:")}
    manifest = {"schema_version": SCHEMA_VERSION, **extra, "heads": manifest_heads, "features": features}
    if flag_heads:
        manifest["flag_heads"] = {k[len("flag:"):]: v for k, v in flag_heads.items()}
    if userdict_path is not None:
        shutil.copy(userdict_path, tmp / "lexicons" / "userdict.txt")
        features["userdict"] = "lexicons/userdict.txt"
    if rules_path is not None:
        shutil.copy(rules_path, tmp / "lexicons" / "rules.json")
        manifest["rules"] = "lexicons/rules.json"
    manifest["library_versions"] = library_versions()
    return finish_bundle(tmp, out_dir, manifest)


def build_time() -> str:
    """The bundle's ``created_at``: ``SOURCE_DATE_EPOCH`` when set (reproducible builds), else now, UTC."""
    created = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(created), dt.timezone.utc) if created else dt.datetime.now(dt.timezone.utc)
    return when.isoformat(timespec="seconds")


def start_bundle(out_dir: Path, *subdirs: str) -> Path:
    """A fresh temporary directory beside ``out_dir`` with ``subdirs``, for ``finish_bundle``."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for sub in subdirs:
        (tmp / sub).mkdir()
    return tmp


def finish_bundle(tmp: Path, out_dir: Path, manifest: dict) -> dict:
    """Record file hashes, write the manifest and rename ``tmp`` into place as ``out_dir``."""
    manifest.setdefault("created_at", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    manifest["files"] = {str(p.relative_to(tmp)): sha256_file(p)
                         for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), "utf-8")
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old)
    else:
        tmp.rename(out_dir)
    return manifest
