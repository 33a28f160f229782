"""Knowledge distillation: a (deep, slow) teacher bundle's probabilities as soft targets.

A student transformer, typically a few layers for serving speed, learns from the
labels and from what a stronger bundle predicts, on the labelled training texts and
on any unlabelled texts (a service centre's years of unrouted history). The teacher
is any bundle ``triage.load`` reads (a transformer or an ensemble), scored through
the code that serves it, so no torch model of the teacher is needed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from training.data import read_dataset


def read_unlabeled(paths: list[str], text_column: str = "text", fmt: str | None = None) -> tuple[list[str], str]:
    """Texts of unlabelled files (CSV, TSV or JSONL with a ``text_column``) and their digest."""
    data = read_dataset([Path(p) for p in paths], text_column=text_column, heads={}, fmt=fmt)
    return data.texts, data.sha256


def teacher_targets(teacher_path: str, normalized: list[str], labels: dict[str, list[str]],
                    batch_size: int = 64, progress: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """The teacher's probabilities per student head, in the student's label order.

    Heads the teacher does not predict get no soft target. A head it predicts with
    another label set is an error: the soft targets would be meaningless.
    """
    from triage.model import load

    teacher = load(teacher_path)
    shared = [h for h in labels if h in teacher.heads]
    for h in shared:
        if sorted(teacher.heads[h].labels) != sorted(labels[h]):
            raise ValueError(f"teacher {teacher_path}: head {h!r} predicts {teacher.heads[h].labels}, "
                             f"the training data has {labels[h]}")
    if not shared:
        raise ValueError(f"teacher {teacher_path} predicts none of the heads {sorted(labels)}")
    columns = {h: np.array([teacher.heads[h].labels.index(lb) for lb in labels[h]]) for h in shared}
    out = {h: np.zeros((len(normalized), len(labels[h])), dtype=np.float32) for h in shared}
    starts = range(0, len(normalized), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="teacher", unit="batch")
    for s in starts:
        probs = teacher.predict_proba(normalized[s:s + batch_size])
        for h in shared:
            out[h][s:s + batch_size] = probs[h][:, columns[h]]
    info = {"model_version": teacher.model_version, "tier": teacher.tier, "heads": shared,
            "digest": hashlib.sha256(b"".join(out[h].tobytes() for h in shared)).hexdigest()[:16]}
    return out, info


def soft_loss(logits, target, temperature: float):
    """``T² · KL(target_T ‖ softmax(logits / T))``, averaged over rows (Hinton et al., 2015).

    ``target`` holds probabilities; softening it by ``T`` is ``p^(1/T)`` renormalised,
    which equals a softmax of the teacher's log-probabilities divided by ``T``.
    """
    import torch

    log_t = torch.log(target.clamp_min(1e-8)) / temperature
    log_t = log_t - torch.logsumexp(log_t, dim=1, keepdim=True)
    log_s = torch.log_softmax(logits / temperature, dim=1)
    return temperature ** 2 * (log_t.exp() * (log_t - log_s)).sum(1).mean()
