"""Scoring with a transformer-tier bundle: ONNX Runtime and ``tokenizers`` only (no torch).

A bundle of tier ``"transformer"`` holds one ONNX graph (shared encoder, mean
pooling, one softmax head per label set, temperature folded in) and a
``tokenizers`` JSON file. Its manifest's ``features`` section reads::

    {"type": "transformer", "vocabulary": "tokenizer/tokenizer.json",
     "config": {"max_length": 128, "head_tokens": 96, "prefix": "", ...}}

and each head names the shared file and its own output::

    "category": {"labels": [...], "onnx": "encoder/model.int8.onnx", "output": "probs_category", ...}

``TransformerScorer(root, manifest).predict_proba(normalized_texts)`` returns
``{head: float32 array [n, n_labels]}`` like ``Model.predict_proba`` of the linear tier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from triage.errors import BundleError

TIER = "transformer"


def head_tail(ids: Sequence[int], max_content: int, head_tokens: int) -> list[int]:
    """Keep the first ``head_tokens`` and the last ``max_content - head_tokens`` content ids."""
    ids = list(ids)
    if len(ids) <= max_content:
        return ids
    head = max(0, min(head_tokens, max_content))
    tail = max_content - head
    return ids[:head] + (ids[len(ids) - tail:] if tail else [])


class TransformerTokenizer:
    """``tokenizers`` encoding with head+tail truncation and padded numpy batches.

    Shared by training and serving so both see exactly the same token ids.
    """

    def __init__(self, tokenizer, *, max_length: int, head_tokens: int | None = None, prefix: str = "",
                 bos_id: int | None = None, eos_id: int | None = None, pad_id: int = 0):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        content = self.max_length - 2
        self.head_tokens = int(head_tokens) if head_tokens is not None else (content * 3) // 4
        self.prefix = prefix
        probe = tokenizer.encode("a", add_special_tokens=True)
        plain = tokenizer.encode("a", add_special_tokens=False)
        n_plain = len(plain.ids)
        extra = len(probe.ids) - n_plain
        if extra == 2 and bos_id is None and eos_id is None:
            bos_id, eos_id = probe.ids[0], probe.ids[-1]
        if bos_id is None or eos_id is None:
            raise BundleError("the tokenizer adds no <s>/</s> pair; name bos_id and eos_id in the bundle")
        self.bos_id, self.eos_id, self.pad_id = int(bos_id), int(eos_id), int(pad_id)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "TransformerTokenizer":
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise BundleError(f"cannot load tokenizer {path}: {exc}") from exc
        return cls(tok, **kwargs)

    def config(self) -> dict:
        return {"max_length": self.max_length, "head_tokens": self.head_tokens, "prefix": self.prefix,
                "bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id}

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        encs = self.tokenizer.encode_batch([self.prefix + t for t in texts], add_special_tokens=False)
        content = self.max_length - 2
        return [[self.bos_id] + head_tail(e.ids, content, self.head_tokens) + [self.eos_id] for e in encs]

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            input_ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return input_ids, mask

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.pad(self.ids(texts))


class TransformerScorer:
    """Per-head probabilities from a transformer bundle; thread-safe like an ORT session."""

    def __init__(self, root: str | Path, manifest: dict, *, threads: int = 1, batch_size: int = 32,
                 onnx_file: str | None = None):
        self.root = Path(root)
        spec = manifest.get("features", {})
        if spec.get("type") != TIER:
            raise BundleError("bundle features are not of type 'transformer'")
        cfg = dict(spec.get("config", {}))
        self.tokenizer = TransformerTokenizer.from_file(
            self.root / spec["vocabulary"], max_length=cfg.get("max_length", 128),
            head_tokens=cfg.get("head_tokens"), prefix=cfg.get("prefix", ""), bos_id=cfg.get("bos_id"),
            eos_id=cfg.get("eos_id"), pad_id=cfg.get("pad_id", 0))
        self.batch_size = batch_size
        heads = manifest["heads"]
        files = {spec_h["onnx"] for spec_h in heads.values()}
        if onnx_file is None and len(files) != 1:
            raise BundleError(f"transformer heads must share one ONNX file, found {sorted(files)}")
        self.onnx_file = onnx_file or files.pop()
        self.session = _session(self.root / self.onnx_file, threads)
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.labels: dict[str, list[str]] = {}
        self.outputs: dict[str, str] = {}
        for name, h in heads.items():
            out = h.get("output", f"probs_{name}")
            if out not in outputs:
                raise BundleError(f"head {name!r}: ONNX file has no output {out!r}")
            width = outputs[out].shape[-1]
            if isinstance(width, int) and width != len(h["labels"]):
                raise BundleError(f"head {name!r}: ONNX output has {width} classes, manifest lists "
                                  f"{len(h['labels'])}")
            self.labels[name] = list(h["labels"])
            self.outputs[name] = out
        self._names = list(self.outputs)

    def predict_proba(self, normalized_texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Calibrated probabilities per head, in input order (batched by length)."""
        n = len(normalized_texts)
        out = {h: np.zeros((n, len(lb)), dtype=np.float32) for h, lb in self.labels.items()}
        if n == 0:
            return out
        rows = self.tokenizer.ids(normalized_texts)
        order = sorted(range(n), key=lambda i: len(rows[i]))
        fetch = [self.outputs[h] for h in self._names]
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            ids, mask = self.tokenizer.pad([rows[i] for i in idx])
            results = self.session.run(fetch, {"input_ids": ids, "attention_mask": mask})
            for h, res in zip(self._names, results):
                out[h][idx] = res
        return out


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BundleError(f"cannot load ONNX encoder {path}: {exc}") from exc
