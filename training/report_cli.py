"""``triage report``, ``triage compare`` and ``triage drift``: thin wrappers over
``training.report``, ``training.compare`` and ``training.drift``.

Registered with the ``triage`` command through the ``triage.commands`` entry points.
Heavy imports (matplotlib, the model) happen when a command runs, not at registration.
"""

from __future__ import annotations

import sys

from training.cli import _add_data_args, _heads


def _columns(args) -> list[str] | None:
    return args.columns.split(",") if args.columns else None


def register_report(sub) -> None:
    p = sub.add_parser("report", help="write an HTML + JSON report of a bundle on labelled data",
                       description="Score labelled data with a bundle and write OUT/report.html (self-contained: "
                                   "charts and font embedded) and OUT/report.json: per head a confusion heat map, "
                                   "per-class precision/recall/F1, calibration, precision-coverage curves with the "
                                   "bundle's thresholds, the most confident mistakes (PII-masked), label "
                                   "distributions, same_day recall and the model card.")
    _add_data_args(p)
    p.add_argument("--model", "-m", default="models/default", help="bundle directory (default: %(default)s)")
    p.add_argument("--out", "-o", required=True, help="directory for report.html and report.json")
    p.add_argument("--mistakes", type=int, default=30, help="most confident mistakes per head (default: %(default)s)")
    p.add_argument("--taxonomy", help="taxonomy JSON for display names (default: the built-in one)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("triage: report needs matplotlib and a CJK font: "
              "pip install matplotlib pylopdf-fonts-zh-cn", file=sys.stderr)
        return 2
    from training.report import write_report
    from triage.taxonomy import load_taxonomy

    report = write_report(args.model, args.data, args.out, text_column=args.text_column, heads=_heads(args.head),
                          fmt=args.format, columns=_columns(args), mistakes=args.mistakes,
                          taxonomy=load_taxonomy(args.taxonomy))
    for head, section in report["heads"].items():
        m = section.get("metrics")
        if m:
            print(f"{head}: macro-F1 {m['macro_f1']}, accuracy {m['accuracy']}, "
                  f"ECE {section['calibration']['ece']}, n {m['n']}")
    if "same_day" in report:
        sd = report["same_day"]
        print(f"same_day: recall {sd['recall']}, precision {sd['precision']}, missed {len(sd['missed'])}")
    if report["font"]["missing_glyphs"]:
        print(f"warning: the chart font lacks {''.join(report['font']['missing_glyphs'])}", file=sys.stderr)
    print(f"wrote {args.out}/report.html and {args.out}/report.json")
    return 0


def register_compare(sub) -> None:
    p = sub.add_parser("compare", help="compare two bundles on the same tickets",
                       description="Score the same tickets with OLD and NEW: metric deltas per head (labelled "
                                   "data) and the tickets whose labels changed, grouped by old→new label.")
    p.add_argument("old", help="the current bundle directory")
    p.add_argument("new", help="the candidate bundle directory")
    _add_data_args(p)
    p.add_argument("--json", dest="json_out", help="also write the full comparison here as JSON")
    p.add_argument("--examples", type=int, default=5, help="example tickets per change group (default: %(default)s)")
    p.add_argument("--groups", type=int, default=10, help="change groups printed per head (default: %(default)s)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from training.compare import compare_bundles, format_comparison, write_comparison

    report = compare_bundles(args.old, args.new, args.data, text_column=args.text_column, heads=_heads(args.head),
                             fmt=args.format, columns=_columns(args), examples=args.examples)
    print(format_comparison(report, groups=args.groups))
    if args.json_out:
        write_comparison(report, args.json_out)
        print(f"wrote {args.json_out}")
    return 0


def register_drift(sub) -> None:
    p = sub.add_parser("drift", help="check recent tickets for drift from the training data (exit 3 on drift)",
                       description="Compare recent tickets (texts; `triage score` output or logged API results; a "
                                   "feedback export) with the bundle's training data: label PSI per head, confidence "
                                   "histogram PSI, new frequent words and character bigrams. Exits with 3 when a "
                                   "PSI exceeds --psi-threshold, so a scheduler can alert.")
    p.add_argument("--model", "-m", default="models/default", help="bundle directory (default: %(default)s)")
    p.add_argument("--data", "-d", nargs="+", required=True, help="recent tickets: JSONL, CSV or TSV")
    p.add_argument("--reference", nargs="+",
                   help="reference tickets for the confidence histogram and term frequencies when the bundle "
                        "stores no manifest['reference']: preferably held-out data of the training period "
                        "(e.g. the dev split); texts the bundle was fit on make it look over-confident")
    p.add_argument("--psi-threshold", type=float, default=0.2, help="alert above this PSI (default: %(default)s)")
    p.add_argument("--format", choices=("csv", "tsv", "jsonl"), help="default: from the file extension")
    p.add_argument("--text-column", default="text", help="default: %(default)s (falls back to text_masked)")
    p.add_argument("--columns", help="comma-separated field names of a header-less CSV/TSV")
    p.add_argument("--rescore", action="store_true", help="score the texts even where rows carry labels")
    p.add_argument("--top-terms", type=int, default=30, help="new terms listed per kind (default: %(default)s)")
    p.add_argument("--min-term-count", type=int, default=3, help="texts a new term must occur in (default: %(default)s)")
    p.add_argument("--json", dest="json_out", help="also write the full result here as JSON ('-': print it instead)")
    p.set_defaults(func=cmd_drift)


def cmd_drift(args) -> int:
    import json

    from training.drift import EXIT_DRIFT, detect_drift, format_drift, write_drift

    report = detect_drift(args.model, args.data, reference=args.reference, psi_threshold=args.psi_threshold,
                          text_column=args.text_column, fmt=args.format, columns=_columns(args),
                          rescore=args.rescore, top_terms=args.top_terms, min_term_count=args.min_term_count)
    if args.json_out == "-":
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        print(format_drift(report))
        if args.json_out:
            write_drift(report, args.json_out)
            print(f"wrote {args.json_out}")
    return EXIT_DRIFT if report["alert"] else 0
