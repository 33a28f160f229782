"""Benchmark the transformer tier against the linear tier; write bench/results/transformer.json.

    python bench/bench_transformer.py [--cocc ../shared/datasets/public/cocc_dev.tsv] [--finetune-4000]

1. cocc_dev.tsv (header-less ``text<TAB>category``): the grouped (identical texts
   together), stratified, seeded 5-fold split of ``triage train --folds 5``; fold 0
   held out by default, ``--cocc-folds 0,1,2,3,4`` for all five (with the mean over
   the folds run). The linear tier (``training.train.train``, its own
   5-fold calibration inside the 80 %) and the transformer tier
   (``train_transformer``, 10 % of the 80 % as dev split) train on the same 80 %
   and are scored on the same 20 %. The split files live in a temporary folder.
2. datasets/corpus/{train,dev,test}.jsonl when present (all heads): same comparison.
   Beside the two tiers, an ensemble (``training.ensemble.build_ensemble``): a second
   linear bundle trained without the dev rows, weights per head chosen on the dev split
   (for cocc: a grouped 10 % of the 80 %, the split the transformer stops early on),
   scored on the same test split. The linear figure it is compared with is the linear
   tier trained on all the training rows (dev included), the stronger baseline.
3. Speed of the served int8 ONNX file on this machine: one 150-character ticket at
   a time (p50/p90 wall time with 2 threads, and single-thread CPU time, which other
   load on a shared machine disturbs less) and batches of 32 tickets; and a sweep of
   layer counts (untrained heads: speed does not depend on the weights), with and
   without onnxruntime's offline BERT fusion, and with the most feed-forward
   down-projections the recipe keeps in fp32 (3), on the pruned vocabulary.
4. Distillation (``--teacher BUNDLE``, corpus part): the transformer trained is a
   student that also learns the teacher bundle's probabilities, on the training split
   and on ``--unlabeled-public N`` texts drawn from the public data (telecom complaints,
   hotel and take-away reviews; none equal to a corpus text) that only the teacher labels.
5. Fine-tuning time: measured minutes of the cocc run, scaled to 4,000 tickets;
   with ``--finetune-4000`` also a real run on 4,000 tickets of datasets/raw (4 heads).
6. int8 schemes (``--only int8 --int8-bundle BUNDLE``, a bundle kept with ``--keep-fp32``):
   label agreement with fp32 on the dev and test splits, one ticket at a time, of
   the bundle's own int8 file, all-int8 dynamic quantisation and weight-only 8-bit
   blocks; the speed of each scheme is in the sweep (part 3).

Run heavy work under ``nice``; the machine's load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.evaluate import evaluate_bundle, head_report  # noqa: E402
from triage.bundle import read_manifest  # noqa: E402
from triage.normalize import normalize_text  # noqa: E402
from triage.transformer import TransformerScorer  # noqa: E402


def grouped_split(texts: list[str], labels: list[str], fold: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``fold`` of the seeded grouped stratified 5-fold split ``triage train --folds 5`` uses."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.unique(np.array([normalize_text(t) for t in texts]), return_inverse=True)[1]
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(texts)), np.array(labels), groups))[fold]


def run_cocc_fold(texts: list[str], labels: list[str], fold: int, args, tmp: Path) -> dict:
    """Linear, transformer and ensemble on one outer fold; the 80 % split 90/10 into train/dev."""
    from training.transformer.train import dev_split

    tr, te = grouped_split(texts, labels, fold)
    inner_tr, inner_dev = dev_split([normalize_text(texts[i]) for i in tr], [labels[i] for i in tr], 0.1, 0)
    name = "cocc" if fold == 0 else f"cocc{fold}"
    for part, idx in {"train": tr[inner_tr], "dev": tr[inner_dev], "test": te}.items():
        (tmp / f"{name}_{part}.tsv").write_text("".join(f"{texts[i]}\t{labels[i]}\n" for i in idx), "utf-8")
    res = compare(name, [tmp / f"{name}_train.tsv"], tmp / f"{name}_test.tsv", args, tmp, fmt="tsv",
                  columns=["text", "category"], dev_files=[tmp / f"{name}_dev.tsv"])
    res["split"] = (f"grouped stratified 5-fold (seed 0), fold {fold} held out; the other 80 % split 90/10 into "
                    "train/dev (grouped, stratified)")
    return res


def summarize_folds(folds: dict[int, dict]) -> dict:
    """Mean test macro-F1 of each tier over the folds run (each scored on its own held-out fold)."""
    def mean(tier: str, key: str) -> float:
        return round(float(np.mean([r[tier][key]["category"]["macro_f1"] for r in folds.values()])), 4)

    out = {"folds": sorted(folds), "linear": mean("linear", "test"),
           "transformer_int8": mean("transformer", "test_int8"), "ensemble": mean("ensemble", "test")}
    out["best_minus_linear_points"] = round(100 * (max(out["transformer_int8"], out["ensemble"]) - out["linear"]), 2)
    return out


def public_unlabeled(n: int, public: Path, exclude: set[str], seed: int = 0) -> list[str]:
    """``n`` distinct texts: half telecom complaints (cocc), a quarter each hotel and take-away reviews."""
    import csv

    pools = {"cocc_dev.tsv": [ln.split("\t")[0] for ln in (public / "cocc_dev.tsv").read_text("utf-8").splitlines()
                              if ln.strip()]}
    for name in ("ChnSentiCorp_htl_all.csv", "waimai_10k.csv"):
        with open(public / name, encoding="utf-8-sig", newline="") as fh:
            pools[name] = [row["review"] for row in csv.DictReader(fh) if row.get("review", "").strip()]
    rng = np.random.default_rng(seed)
    seen = set(exclude)
    out = []
    for name, share in (("cocc_dev.tsv", 0.5), ("ChnSentiCorp_htl_all.csv", 0.25), ("waimai_10k.csv", 0.25)):
        want = int(round(n * share))
        for i in rng.permutation(len(pools[name])):
            if want == 0:
                break
            text = pools[name][i]
            key = normalize_text(text)
            if key not in seen and len(text.strip()) >= 8:
                seen.add(key)
                out.append(text)
                want -= 1
    return out


def score_transformer(bundle: Path, texts: list[str], gold: dict[str, list], onnx_file: str | None = None) -> dict:
    manifest = read_manifest(bundle)
    scorer = TransformerScorer(bundle, manifest, threads=2, onnx_file=onnx_file)
    probs = scorer.predict_proba([normalize_text(t) for t in texts])
    out = {}
    for head, values in gold.items():
        labels = scorer.labels[head]
        extra = sorted({v for v in values if v is not None and v not in labels})
        index = {lb: i for i, lb in enumerate(labels + extra)}
        rows = [i for i, v in enumerate(values) if v is not None]
        y = np.array([index[values[i]] for i in rows])
        p = np.zeros((len(rows), len(index)))
        p[:, :len(labels)] = probs[head][rows]
        rep = head_report(y, p, labels + extra)
        out[head] = {"accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"], "n": rep["n"]}
    return out, probs


def score_linear(bundle: Path, test_path: Path, **kw) -> dict:
    rep = evaluate_bundle(bundle, [test_path], **kw)
    return {h: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": r["n"]} for h, r in rep["heads"].items()}


def agreement(a: dict, b: dict) -> dict:
    return {h: round(float((a[h].argmax(1) == b[h].argmax(1)).mean()), 4) for h in a}


def compare(name: str, train_files: list[Path], test_file: Path, args, tmp: Path, *, fmt=None, columns=None,
            dev_files=None, linear_extra_files=(), teacher=None, unlabeled_files=None) -> dict:
    from training.train import TrainConfig, train
    from training.transformer.train import TransformerConfig, train_transformer

    from training.data import read_dataset

    test = read_dataset([test_file], fmt=fmt, columns=columns)
    result: dict = {"n_test": len(test)}
    if not args.skip_linear:
        t0 = time.monotonic()
        lin_dir = tmp / f"{name}-linear"
        train(TrainConfig(data=[str(p) for p in [*train_files, *(dev_files or []), *linear_extra_files]],
                          format=fmt, columns=columns, name=f"{name}-linear"), lin_dir)
        result["linear"] = {"minutes": round((time.monotonic() - t0) / 60, 2),
                            "test": score_linear(lin_dir, test_file, fmt=fmt, columns=columns)}
        print(f"[{name}] linear: {json.dumps(result['linear'])}", file=sys.stderr)
    cfg = TransformerConfig(data=[str(p) for p in train_files], dev_data=[str(p) for p in dev_files] if dev_files else None,
                            format=fmt, columns=columns, layers=args.layers or None, max_length=args.max_length,
                            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, keep_fp32=True,
                            name=f"{name}-transformer", progress=True, threads=2,
                            checkpoint_dir=str(tmp / f"{name}.ckpt"), teacher=teacher,
                            unlabeled_data=unlabeled_files)
    tr_dir = tmp / f"{name}-transformer"
    t0 = time.monotonic()
    manifest = train_transformer(cfg, tr_dir)
    minutes = (time.monotonic() - t0) / 60
    int8, p8 = score_transformer(tr_dir, test.texts, test.labels)
    fp32, p32 = score_transformer(tr_dir, test.texts, test.labels, onnx_file="encoder/model.fp32.onnx")
    result["transformer"] = {
        "minutes_total": round(minutes, 2), "train_minutes": manifest["training"]["train_minutes"],
        "train_cpu_minutes": manifest["training"]["train_cpu_minutes"],
        "n_train": manifest["training"]["n_train"], "n_dev": manifest["training"]["n_dev"],
        "epochs_run": len(manifest["training"]["history"]), "best_epoch": manifest["training"]["best_epoch"],
        "history": [{k: v for k, v in h.items() if k != "heads"} for h in manifest["training"]["history"]],
        "backbone": manifest["features"]["backbone"], "parity_dev": manifest["metrics"]["parity"],
        "distillation": manifest["training"].get("distillation"),
        "test_int8": int8, "test_fp32": fp32, "int8_vs_fp32_label_agreement_test": agreement(p8, p32),
        "bundle_mb": round(sum(p.stat().st_size for p in tr_dir.rglob("*") if p.is_file()) / 1e6, 1)}
    print(f"[{name}] transformer: {json.dumps({k: result['transformer'][k] for k in ('test_int8', 'minutes_total')})}",
          file=sys.stderr)
    result["_bundle"] = str(tr_dir)
    if dev_files:
        result["ensemble"] = ensemble(name, train_files, dev_files, test_file, tr_dir, tmp, fmt=fmt, columns=columns)
    return result


def ensemble(name: str, train_files: list[Path], dev_files: list[Path], test_file: Path, tr_dir: Path, tmp: Path,
             *, fmt=None, columns=None) -> dict:
    """A linear bundle on the training rows only, combined with the transformer on the dev split."""
    from training.ensemble import EnsembleConfig, build_ensemble
    from training.train import TrainConfig, train

    t0 = time.monotonic()
    lin_dir = tmp / f"{name}-linear-train-only"
    train(TrainConfig(data=[str(p) for p in train_files], format=fmt, columns=columns,
                      name=f"{name}-linear-train-only"), lin_dir)
    ens_dir = tmp / f"{name}-ensemble"
    manifest = build_ensemble(EnsembleConfig(linear=str(lin_dir), transformer=str(tr_dir),
                                             dev_data=[str(p) for p in dev_files], format=fmt, columns=columns,
                                             name=f"{name}-ensemble"), ens_dir)
    out = {"minutes": round((time.monotonic() - t0) / 60, 2),
           "dev": {h: {"weights": m["weights"], "linear_train_only": m["linear"]["macro_f1"],
                       "transformer": m["transformer"]["macro_f1"], "ensemble": m["ensemble"]["macro_f1"],
                       **({"int8_agreement": m["int8_agreement"]} if "int8_agreement" in m else {})}
                   for h, m in manifest["metrics"]["dev"]["heads"].items()},
           "test": score_linear(ens_dir, test_file, fmt=fmt, columns=columns),
           "test_linear_train_only": score_linear(lin_dir, test_file, fmt=fmt, columns=columns)}
    print(f"[{name}] ensemble: {json.dumps(out)}", file=sys.stderr)
    return out


def speed_sweep(texts: list[str], layer_counts: list[int], tmp: Path) -> dict:
    """int8 speed by encoder depth, with and without offline BERT fusion (heads untrained)."""
    import torch

    from training.transformer.export import (ONNX_INT8, down_projections, export_onnx, fuse_bert, quantize_int8,
                                             quantize_int8_weights, write_transformer_bundle)
    from training.transformer.modeling import ExportModule, MultiTaskModel
    from training.transformer.train import TransformerConfig, _pad_id, load_encoder
    from triage.transformer import TransformerTokenizer

    normalized = [normalize_text(t) for t in texts]
    out = {}
    for layers in layer_counts:
        encoder, hf_tok, info = load_encoder(TransformerConfig(data=[], layers=layers), normalized, lambda *a: None)
        tok = TransformerTokenizer(hf_tok, max_length=128, pad_id=_pad_id(encoder, hf_tok))
        torch.manual_seed(0)
        module = ExportModule(MultiTaskModel(encoder, {"category": 12}), {})
        fp32 = export_onnx(module, tmp / f"sweep{layers}" / "fp32.onnx", tok, normalized)
        variants = {"unfused": fp32}
        fused = tmp / f"sweep{layers}" / "fused.onnx"
        try:
            fuse_bert(fp32, fused, num_heads=encoder.config.num_attention_heads,
                      hidden_size=encoder.config.hidden_size)
            variants["fused"] = fused
        except Exception as exc:  # the optimizer's failures are not typed
            out[f"{layers}_fused_error"] = str(exc)[:200]
        # the most --int8 dynamic keeps in fp32 (int8_fp32_matmuls=3): the slowest file it can write
        variants["unfused_3_fp32_down"] = fp32
        variants["weights"] = fp32  # the default, --int8 weights (8-bit blocks of 64)
        for variant, src in variants.items():
            if variant == "weights":
                int8 = quantize_int8_weights(src, tmp / f"sweep{layers}" / f"{variant}.int8.onnx")
            else:
                keep = down_projections(src)[:3] if variant.endswith("fp32_down") else ()
                int8 = quantize_int8(src, tmp / f"sweep{layers}" / f"{variant}.int8.onnx", keep_fp32=keep)
            bundle = tmp / f"sweep{layers}-{variant}"
            write_transformer_bundle(bundle, onnx_files={ONNX_INT8: int8}, serve=ONNX_INT8,
                                     tokenizer_json=hf_tok.to_str(), tokenizer_config=tok.config(),
                                     heads={"category": {"labels": [f"c{i}" for i in range(12)], "temperature": 1.0,
                                                         "thresholds": {}}},
                                     rules_path=None, extra={"model_version": f"sweep{layers}"}, backbone=info)
            result = speed(bundle, texts)
            result.update(layers=layers, vocab_size=info["vocab_size"],
                          int8_mb=round(int8.stat().st_size / 1e6, 1))
            out[f"{layers}_{variant}"] = result
            print(f"[sweep] {layers} layers {variant}: {json.dumps(result['single_150_chars_ms'])} "
                  f"batch {result['batch_150_chars_per_s_2_threads']}/s", file=sys.stderr)
    return out


def int8_schemes(bundle: Path, splits: dict[str, Path], tmp: Path) -> dict:
    """Label agreement with fp32, one ticket at a time, of int8 files made from a bundle's fp32 file.

    The bundle must ship its fp32 file (``--keep-fp32``). Compared: the bundle's own int8
    file, all-int8 dynamic quantisation and weight-only 8-bit blocks of 64 and 128.
    """
    from training.transformer.export import (ONNX_FP32, ONNX_INT8, ort_session, quantize_int8, quantize_int8_weights,
                                             run_onnx)

    manifest = read_manifest(bundle)
    fp32 = bundle / ONNX_FP32
    files = {"served": bundle / ONNX_INT8,
             "dynamic_all_int8": quantize_int8(fp32, tmp / "int8-dynamic.onnx"),
             "weights_block_64": quantize_int8_weights(fp32, tmp / "int8-w64.onnx", block_size=64),
             "weights_block_128": quantize_int8_weights(fp32, tmp / "int8-w128.onnx", block_size=128)}
    scorer = TransformerScorer(bundle, manifest, onnx_file=ONNX_FP32)
    names = list(manifest["heads"])
    out = {"bundle": str(bundle), "served_file": manifest["metrics"].get("parity", {}).get("int8_scheme", "dynamic")}
    for split, path in splits.items():
        texts = [normalize_text(json.loads(ln)["text"]) for ln in path.read_text("utf-8").splitlines() if ln.strip()]
        ref = run_onnx(ort_session(fp32, 2), scorer.tokenizer, texts, names, batch_size=1)
        for label, f in files.items():
            got = run_onnx(ort_session(f, 2), scorer.tokenizer, texts, names, batch_size=1)
            out.setdefault(label, {"mb": round(f.stat().st_size / 1e6, 1)})[split] = {
                h: round(float((got[h].argmax(1) == ref[h].argmax(1)).mean()), 4) for h in names}
        print(f"[int8] {split}: {json.dumps({k: v[split] for k, v in out.items() if isinstance(v, dict)})}",
              file=sys.stderr)
    return out


def speed(bundle: Path, texts: list[str], n_single: int = 200) -> dict:
    manifest = read_manifest(bundle)
    t150 = [(t * (150 // max(1, len(t)) + 1))[:150] for t in texts]
    norm = [normalize_text(t) for t in t150]
    out = {"loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    s2 = TransformerScorer(bundle, manifest, threads=2, batch_size=32)
    s1 = TransformerScorer(bundle, manifest, threads=1, batch_size=32)
    out["tokens_150_chars_mean"] = round(float(np.mean([len(r) for r in s2.tokenizer.ids(norm)])), 1)
    for s in (s1, s2):
        s.predict_proba(norm[:8])  # warm-up
    wall, cpu = [], []
    for t in norm[:n_single]:
        a = time.perf_counter()
        s2.predict_proba([t])
        wall.append(time.perf_counter() - a)
        b = time.thread_time()
        s1.predict_proba([t])
        cpu.append(time.thread_time() - b)
    out["single_150_chars_ms"] = {"p50_wall_2_threads": round(1000 * float(np.median(wall)), 2),
                                  "p90_wall_2_threads": round(1000 * float(np.percentile(wall, 90)), 2),
                                  "p50_cpu_1_thread": round(1000 * float(np.median(cpu)), 2)}
    batch = norm[:512]
    a = time.perf_counter()
    s2.predict_proba(batch)
    out["batch_150_chars_per_s_2_threads"] = round(len(batch) / (time.perf_counter() - a), 1)
    b = time.thread_time()
    s1.predict_proba(batch[:256])
    out["batch_150_chars_per_s_cpu_1_thread"] = round(256 / (time.thread_time() - b), 1)
    raw = [normalize_text(t) for t in texts[:512]]
    a = time.perf_counter()
    s2.predict_proba(raw)
    out["batch_real_texts_per_s_2_threads"] = round(len(raw) / (time.perf_counter() - a), 1)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cocc", default=str(REPO.parent / "shared" / "datasets" / "public" / "cocc_dev.tsv"))
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "transformer.json"))
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--skip-linear", action="store_true")
    p.add_argument("--finetune-4000", action="store_true", help="also time a real run on 4,000 tickets")
    p.add_argument("--sweep-layers", default="3,4,6", help="layer counts of the speed sweep ('' to skip)")
    p.add_argument("--cocc-folds", default="0", help="outer folds of the cocc part, e.g. 0,1,2,3,4 for all five")
    p.add_argument("--only", default="cocc,corpus,sweep", help="comma-separated parts to run (also: int8)")
    p.add_argument("--int8-bundle", help="int8 part: a corpus transformer bundle that ships its fp32 file")
    p.add_argument("--keep-dir", help="write the bundles and splits here and keep them (default: a temporary folder)")
    p.add_argument("--merge", action="store_true", help="update the parts run in an existing --out file")
    p.add_argument("--teacher", help="corpus part: distil from this bundle (e.g. the 12-layer corpus transformer)")
    p.add_argument("--unlabeled-public", type=int, default=0,
                   help="with --teacher: this many public texts the teacher labels for the student")
    args = p.parse_args()

    import torch

    torch.set_num_threads(2)
    results: dict = {"machine": {"cores": os.cpu_count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
                     "recipe": {"layers": args.layers, "max_length": args.max_length, "epochs": args.epochs,
                                "batch_size": args.batch_size, "lr": args.lr,
                                "quantisation": "weight-only int8, blocks of 64",
                                **({"teacher": args.teacher, "unlabeled_public": args.unlabeled_public}
                                   if args.teacher else {})}}
    with tempfile.TemporaryDirectory(prefix="bench-transformer-") as tmpdir:
        tmp = Path(args.keep_dir) if args.keep_dir else Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        cocc = Path(args.cocc)
        bundle = None
        parts = set(args.only.split(","))
        if "cocc" in parts and cocc.is_file():
            lines = [ln.rstrip("\n").split("\t") for ln in cocc.read_text("utf-8").splitlines() if ln.strip()]
            texts, labels = [ln[0] for ln in lines], [ln[1] for ln in lines]
            folds = {}
            for fold in (int(x) for x in args.cocc_folds.split(",")):
                res = run_cocc_fold(texts, labels, fold, args, tmp)
                bundle = Path(res.pop("_bundle"))
                folds[fold] = res
            res = folds[min(folds)]
            if len(folds) > 1:
                results["cocc_folds"] = {"per_fold": folds, "summary": summarize_folds(folds)}
            results["cocc"] = res
            last_test = grouped_split(texts, labels, max(folds))[1]
            results["speed"] = speed(bundle, [texts[i] for i in last_test])
            tr_min = res["transformer"]["train_minutes"]
            scale = 4000 / res["transformer"]["n_train"]
            results["finetune_4000_minutes_extrapolated"] = {
                "wall_as_measured": round(tr_min * scale, 1),
                "cpu_minutes_over_2_cores": round(res["transformer"]["train_cpu_minutes"] * scale / 2, 1),
                "note": "linear in rows at the same epochs; cpu/2 estimates an otherwise idle 2-core machine"}
        elif "cocc" in parts:
            results["cocc"] = f"skipped: {cocc} not found"
        corpus = REPO / "datasets" / "corpus"
        if "corpus" in parts and all((corpus / f"{s}.jsonl").is_file() for s in ("train", "dev", "test")):
            unlabeled_files = None
            if args.teacher and args.unlabeled_public:
                corpus_texts = {normalize_text(json.loads(ln)["text"]) for s in ("train", "dev", "test")
                                for ln in (corpus / f"{s}.jsonl").read_text("utf-8").splitlines() if ln.strip()}
                extra = public_unlabeled(args.unlabeled_public, cocc.parent, corpus_texts)
                (tmp / "unlabeled.jsonl").write_text(
                    "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in extra), "utf-8")
                unlabeled_files = [str(tmp / "unlabeled.jsonl")]
            res = compare("corpus", [corpus / "train.jsonl"], corpus / "test.jsonl", args, tmp,
                          dev_files=[corpus / "dev.jsonl"], teacher=args.teacher, unlabeled_files=unlabeled_files)
            res.pop("_bundle")
            results["corpus"] = res
        elif "corpus" in parts:
            results["corpus"] = "skipped: datasets/corpus/{train,dev,test}.jsonl not present"
        if "int8" in parts:
            if not args.int8_bundle:
                p.error("--only int8 needs --int8-bundle (a transformer bundle trained with --keep-fp32)")
            results["int8_schemes"] = int8_schemes(Path(args.int8_bundle),
                                                   {s: corpus / f"{s}.jsonl" for s in ("dev", "test")}, tmp)
        if "sweep" in parts and args.sweep_layers:
            sweep_texts = [json.loads(ln)["text"] for ln in (corpus / "test.jsonl").read_text("utf-8").splitlines()
                           if ln.strip()] if (corpus / "test.jsonl").is_file() else []
            if sweep_texts:
                results["speed_sweep"] = speed_sweep(sweep_texts, [int(x) for x in args.sweep_layers.split(",")],
                                                     tmp)
        if args.finetune_4000:
            from training.transformer.train import TransformerConfig, train_transformer

            rows = [ln for f in sorted((REPO / "datasets" / "raw").glob("*.jsonl"))
                    for ln in f.read_text("utf-8").splitlines() if ln.strip()]
            rng = np.random.default_rng(0)
            pick = sorted(rng.choice(len(rows), size=min(4000, len(rows)), replace=False))
            (tmp / "raw4000.jsonl").write_text("".join(rows[i] + "\n" for i in pick), "utf-8")
            cfg = TransformerConfig(data=[str(tmp / "raw4000.jsonl")], layers=args.layers or None,
                                    max_length=args.max_length, epochs=args.epochs, batch_size=args.batch_size,
                                    lr=args.lr, progress=True, threads=2, name="raw4000",
                                    checkpoint_dir=str(tmp / "raw4000.ckpt"))
            t0 = time.monotonic()
            m = train_transformer(cfg, tmp / "raw4000")
            results["finetune_4000"] = {
                "rows": len(pick), "n_train": m["training"]["n_train"], "heads": list(m["heads"]),
                "train_minutes": m["training"]["train_minutes"],
                "train_cpu_minutes": m["training"]["train_cpu_minutes"], "total_minutes": round((time.monotonic() - t0) / 60, 2),
                "epochs_run": len(m["training"]["history"]),
                "dev": {h: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}
                        for h, r in m["metrics"]["dev"]["heads"].items()}}
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    if args.merge and out.is_file():  # each merged part carries its own run's machine and recipe
        run = {k: results.pop(k) for k in ("machine", "recipe")}
        results = {**json.loads(out.read_text("utf-8")),
                   **{k: {**v, "run": run} if isinstance(v, dict) else v for k, v in results.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, ensure_ascii=False, indent=1), "utf-8")
    print(json.dumps(results, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
