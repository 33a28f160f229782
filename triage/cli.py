"""The ``triage`` command.

Inference commands live here. Commands that need the training extras (``train``,
``eval``, …) are contributed through the ``triage.commands`` entry-point group, so the
inference library never imports ``training``.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata

from triage.errors import TriageError
from triage.relabel import register_relabel

DEFAULT_MODEL = "models/default"


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def cmd_score(args) -> int:
    from triage.model import load

    model = load(args.model)
    if args.text is not None and args.input is not None:
        raise SystemExit("give either TEXT or --input, not both")
    if args.text is not None:
        ticket = {"text": args.text, "received_at": args.received_at}
        print(json.dumps(model.score(ticket).to_dict(), ensure_ascii=False, indent=None if args.compact else 1))
        return 0
    if args.input is None:
        raise SystemExit("give a TEXT to score or --input FILE.jsonl")
    source = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    failures = 0
    with source:
        batch: list[tuple[int, dict]] = []
        for lineno, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                obj = {"__error__": f"line {lineno}: invalid JSON: {exc.msg}"}
            batch.append((lineno, obj))
            if len(batch) >= args.batch_size:
                failures += _score_lines(model, batch)
                batch = []
        failures += _score_lines(model, batch)
    if failures:
        print(f"triage: {failures} line(s) could not be scored (see their 'error' fields)", file=sys.stderr)
    return 1 if failures else 0


def _score_lines(model, batch) -> int:
    """Score a batch of (line number, object) and print one JSON line each, in order."""
    tickets = [obj if isinstance(obj, dict) and "__error__" not in obj else {"text": None} for _, obj in batch]
    results = model.score_batch(tickets, errors="return")
    failures = 0
    for (lineno, obj), res in zip(batch, results):
        if isinstance(obj, dict) and "__error__" in obj:
            print(_dump({"line": lineno, "error": {"code": "bad_json", "message": obj["__error__"]}}))
            failures += 1
        elif isinstance(res, TriageError):
            ident = obj.get("id") if isinstance(obj, dict) else None
            print(_dump({"line": lineno, "id": ident, "error": {"code": res.code, "message": str(res)}}))
            failures += 1
        else:
            print(_dump(res.to_dict()))
    sys.stdout.flush()
    return failures


def cmd_info(args) -> int:
    from triage.bundle import read_manifest

    manifest = read_manifest(args.model)
    if args.json:
        print(json.dumps(manifest, ensure_ascii=False, indent=1))
        return 0
    print(format_model_card(manifest))
    return 0


def format_model_card(manifest: dict) -> str:
    """A short human-readable model card from a manifest."""
    training = manifest.get("training", {})
    lines = [f"model      {manifest['model_version']} (schema {manifest['schema_version']}, "
             f"tier {manifest.get('tier', 'linear')})",
             f"created    {manifest.get('created_at', '?')}",
             f"data       {', '.join(training.get('sources', [])) or '?'}: {training.get('n_rows', '?')} rows, "
             f"sha256 {training.get('data_sha256', '?')[:16]}",
             f"features   {manifest['features'].get('n_features')} "
             f"({json.dumps(manifest['features'].get('config', {}))})"]
    cv = manifest.get("metrics", {}).get("cv", {})
    for head, spec in manifest["heads"].items():
        rep = cv.get("heads", {}).get(head, {})
        cov = rep.get("at_thresholds", {}).get("coverage")
        lines.append(f"head       {head}: {len(spec['labels'])} labels; {cv.get('folds', '?')}-fold CV "
                     f"accuracy {rep.get('accuracy')}, macro-F1 {rep.get('macro_f1')}"
                     + (f", coverage at target precision {cov:.2f}" if cov is not None else ""))
        counts = training.get("label_counts", {}).get(head)
        if counts:
            lines.append("           " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if manifest.get("rules"):
        lines.append(f"rules      {manifest['rules']}")
    if manifest.get("tier", "linear") != "transformer":
        from triage.features import _featurize

        lines.append("runtime    single tickets featurised by " + (
            "the compiled extension (triage._featurize)" if _featurize is not None
            else "numpy: the C extension was not built, so each ticket takes about a quarter longer"))
    return "\n".join(lines)


def cmd_serve(args) -> int:
    from serve.run import run_server

    return run_server(model=args.model, host=args.host, port=args.port, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triage", description="Chinese complaint triage and routing.")
    parser.add_argument("--version", action="version", version=f"triage {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("score", help="score one text or a JSONL file of tickets",
                       description="Score TEXT, or every line of --input (JSONL with 'text' and optional "
                                   "'id', 'received_at', 'channel'); prints one JSON result per line in input order.")
    p.add_argument("text", nargs="?", help="the complaint text")
    p.add_argument("--input", "-i", help="JSONL file of tickets ('-' for standard input)")
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help="bundle directory (default: %(default)s)")
    p.add_argument("--received-at", help="ISO 8601 receipt time for TEXT (default: now, Asia/Shanghai)")
    p.add_argument("--batch-size", type=int, default=256, help="tickets per batch with --input")
    p.add_argument("--compact", action="store_true", help="print TEXT's result on one line")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("info", help="show a bundle's model card")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="bundle directory (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="serve the scoring API")
    p.add_argument("--model", "-m", default=None, help="bundle directory (default: $TRIAGE_MODEL or models/default)")
    p.add_argument("--host", default=None, help="default: $TRIAGE_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: $TRIAGE_PORT or 8080")
    p.add_argument("--workers", type=int, default=None, help="default: $TRIAGE_WORKERS or 2")
    p.set_defaults(func=cmd_serve)

    for ep in metadata.entry_points(group="triage.commands"):
        try:
            register = ep.load()
        except ImportError as exc:
            missing = exc.name or ep.name
            stub = sub.add_parser(ep.name, help=f"(unavailable: install the 'train' extra; {missing} is missing)")
            stub.set_defaults(func=lambda _args, m=missing: _missing(m))
            continue
        register(sub)
    register_relabel(sub)
    return parser


def _missing(module: str) -> int:
    print(f"triage: this command needs the training extras ({module} is not installed): "
          "pip install 'triage[train]'", file=sys.stderr)
    return 2


def _version() -> str:
    try:
        return metadata.version("triage")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except TriageError as exc:
        print(f"triage: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"triage: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
