"""``triage train`` and ``triage eval``: thin wrappers over ``train`` and ``evaluate_bundle``.

Registered with the ``triage`` command through the ``triage.commands`` entry points.
"""

from __future__ import annotations

import json
from pathlib import Path

from triage.features import FeatureConfig


def _heads(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for value in values:
        name, _, column = value.partition("=")
        out[name] = column or name
    return out


def _add_data_args(p, *, data: bool = True) -> None:
    """The labelled-data options; ``data=False`` leaves out ``--data`` for commands that name their files otherwise."""
    if data:
        p.add_argument("--data", "-d", nargs="+", required=True, help="CSV, TSV or JSONL file(s)")
    p.add_argument("--format", choices=("csv", "tsv", "jsonl"), help="default: from the file extension")
    p.add_argument("--text-column", default="text", help="default: %(default)s")
    p.add_argument("--head", action="append", metavar="NAME[=COLUMN]",
                   help="a label head and its column (repeat); default: category, department, urgency, "
                        "sentiment where present")
    p.add_argument("--columns", help="comma-separated field names of a header-less CSV/TSV")


def register_train(sub) -> None:
    p = sub.add_parser("train", help="train a linear bundle from labelled data",
                       description="Train one linear head per label column on shared "
                                   "character n-gram + jieba word TF-IDF features, with k-fold "
                                   "cross-validated calibration and thresholds, and write a bundle.")
    _add_data_args(p)
    p.add_argument("--out", "-o", required=True, help="bundle directory to write, e.g. models/NAME")
    p.add_argument("--name", default=None, help="model name (default: the --out folder name)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--classifier", choices=("svm", "logreg"), default="svm",
                   help="linear model per head: a class-balanced linear SVM or logistic regression; "
                        "either way scores are calibrated to probabilities (default: %(default)s)")
    p.add_argument("--C", type=float, default=None,
                   help="inverse regularisation strength (default: 10 for logreg, 1 for svm)")
    p.add_argument("--char-ngrams", default="1,3", help="min,max character n-gram (default: %(default)s)")
    p.add_argument("--no-words", action="store_true", help="character n-grams only, no jieba words")
    p.add_argument("--max-features", type=int, default=80_000,
                   help="keep the N most frequent n-grams and words (default 80,000, which keeps "
                        "a bundle of the default taxonomy under 20 MB)")
    p.add_argument("--rule-states", type=float, default=0.0,
                   help="weight of rule-state features (which urgency rule matched, and whether it was a "
                        "hit, negated, hypothetical or over; 0.1 is a sensible weight). Off by default: "
                        "rules written from this data make the heads trust them more than new tickets "
                        "deserve, and the same_day threshold is then held to its recall with the states "
                        "withheld (default %(default)s)")
    p.add_argument("--target-precision", type=float, default=0.90)
    p.add_argument("--same-day-recall", type=float, default=0.98)
    p.add_argument("--same-day-confidence", type=float, default=0.5,
                   help="the same_day threshold must reach --same-day-recall at this one-sided confidence "
                        "on out-of-fold predictions (default %(default)s: the point estimate; the rules "
                        "are the margin on top)")
    p.add_argument("--threshold-repeats", type=int, default=5,
                   help="cross-validations (different fold seeds) whose out-of-fold urgency scores are "
                        "pooled to choose the same_day threshold; one run moves it by seed alone "
                        "(default %(default)s; 1: the main run only)")
    p.add_argument("--rules-in-threshold", action="store_true",
                   help="count the rows the rules raise to same_day when choosing the same_day threshold. "
                        "Only for rules not written while reading this data: rules fitted to its misses "
                        "look better on it than on new tickets, and the threshold they allow is too high")
    p.add_argument("--rules", help="rules JSON (default: the built-in lexicon)")
    p.add_argument("--userdict", help="jieba user dictionary (default: the built-in one)")
    p.add_argument("--baseline", action="append", choices=("fasttext", "sklearn_char_lr"), default=[],
                   help="also train this baseline on the same folds and report it")
    p.add_argument("--report", help="write the cross-validation report here (.json and .md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tier", choices=("linear", "transformer"), default="linear",
                   help="linear (default) or a fine-tuned transformer (needs the transformer extra)")
    from training.transformer.cli import add_transformer_args

    add_transformer_args(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    if args.tier == "transformer":
        from training.transformer.cli import cmd_train_transformer

        return cmd_train_transformer(args)
    from training.evaluate import report_markdown
    from training.train import TrainConfig, train

    lo, hi = (int(v) for v in args.char_ngrams.split(","))
    config = TrainConfig(
        data=args.data, text_column=args.text_column, heads=_heads(args.head), format=args.format,
        columns=args.columns.split(",") if args.columns else None,
        features=FeatureConfig(char_ngram_min=lo, char_ngram_max=hi, words=not args.no_words,
                               max_features=args.max_features, rule_states=args.rule_states),
        classifier=args.classifier, C=args.C, folds=args.folds, seed=args.seed,
        target_precision=args.target_precision,
        same_day_recall=args.same_day_recall, same_day_confidence=args.same_day_confidence,
        threshold_repeats=args.threshold_repeats,
        rules_in_threshold=args.rules_in_threshold, rules=args.rules, userdict=args.userdict,
        name=args.name or Path(args.out).name, baselines=tuple(args.baseline), progress=True)
    manifest = train(config, args.out)
    cv = manifest["metrics"]["cv"]
    for head, rep in cv["heads"].items():
        line = f"{head}: {cv['folds']}-fold macro-F1 {rep['macro_f1']}, accuracy {rep['accuracy']}"
        for name, base in rep.get("baselines", {}).items():
            line += f"; {name} macro-F1 {base['macro_f1']}"
        print(line)
    if args.report:
        _write_report(Path(args.report), {"data": args.data, **cv}, "Cross-validation", report_markdown)
    print(f"wrote {args.out} ({manifest['model_version']})")
    return 0


def register_ensemble(sub) -> None:
    p = sub.add_parser("ensemble", help="combine a linear and a transformer bundle, weights chosen on a dev split",
                       description="Per head, serve (1 - w) * linear + w * transformer probabilities with w "
                                   "chosen on the dev split (w = 0: linear alone, 1: transformer alone), then "
                                   "fit the temperature, review thresholds and same_day threshold on that split. "
                                   "The linear bundle must not have been trained on the dev rows.")
    p.add_argument("--linear", required=True, help="a linear bundle trained without the dev rows")
    p.add_argument("--transformer", required=True, help="a transformer bundle (dev rows used at most to stop early)")
    p.add_argument("--dev-data", nargs="+", required=True, help="labelled dev split file(s)")
    _add_data_args(p, data=False)
    p.add_argument("--out", "-o", required=True, help="bundle directory to write")
    p.add_argument("--name", help="model name (default: the --out folder name)")
    p.add_argument("--target-precision", type=float, default=0.90)
    p.add_argument("--same-day-recall", type=float, default=0.98)
    p.add_argument("--same-day-confidence", type=float, default=0.5)
    p.add_argument("--rules-in-threshold", action="store_true",
                   help="count the rows the rules raise to same_day when choosing the same_day threshold. "
                        "Only for rules not written while reading this data: rules fitted to its misses "
                        "look better on it than on new tickets, and the threshold they allow is too high")
    p.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args) -> int:
    from training.ensemble import EnsembleConfig, build_ensemble, summarize

    config = EnsembleConfig(linear=args.linear, transformer=args.transformer, dev_data=args.dev_data,
                            text_column=args.text_column, heads=_heads(args.head), format=args.format,
                            columns=args.columns.split(",") if args.columns else None,
                            target_precision=args.target_precision, same_day_recall=args.same_day_recall,
                            same_day_confidence=args.same_day_confidence,
                            rules_in_threshold=args.rules_in_threshold, name=args.name or Path(args.out).name)
    manifest = build_ensemble(config, args.out)
    for line in summarize(manifest):
        print(line)
    print(f"wrote {args.out} ({manifest['model_version']})")
    return 0


def register_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a bundle on labelled data")
    _add_data_args(p)
    p.add_argument("--model", "-m", default="models/default")
    p.add_argument("--report", help="write the report here (.json and .md)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from training.evaluate import evaluate_bundle, report_markdown

    report = evaluate_bundle(args.model, args.data, text_column=args.text_column, heads=_heads(args.head),
                             fmt=args.format, columns=args.columns.split(",") if args.columns else None)
    for head, rep in report["heads"].items():
        print(f"{head}: macro-F1 {rep['macro_f1']}, accuracy {rep['accuracy']}, n {rep['n']}")
    if "same_day" in report:
        sd = report["same_day"]
        auto = sd["without_review"]
        print(f"same_day: recall {sd['recall']}, precision {sd['precision']}; without review: "
              f"precision {auto['precision']}, recall {auto['recall']} ({sd['calls_for_review']} calls for review)")
    if args.report:
        _write_report(Path(args.report), report, f"Evaluation of {args.model}", report_markdown)
    return 0


def _write_report(path: Path, report: dict, title: str, render) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.with_suffix("")
    stem.with_suffix(".json").write_text(json.dumps(report, ensure_ascii=False, indent=1), "utf-8")
    stem.with_suffix(".md").write_text(render(report, title), "utf-8")
    print(f"wrote {stem}.json and {stem}.md")
