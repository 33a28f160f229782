"""``triage feedback export``: registered through the ``triage.commands`` entry points.

pyproject.toml::

    [project.entry-points."triage.commands"]
    feedback = "serve.cli:register_feedback"

Imports nothing heavy at registration, so ``triage`` works without the serve extras.
"""

from __future__ import annotations

import os
import sys


def register_feedback(sub) -> None:
    """Add ``feedback`` (with ``export``) to the ``triage`` subcommands."""
    from serve.config import DEFAULT_DATABASE_URL

    p = sub.add_parser("feedback", help="work with the agents' feedback store",
                       description="Agents' final labels stored by POST /v1/feedback.")
    fsub = p.add_subparsers(dest="feedback_command", metavar="ACTION")
    fsub.required = True
    e = fsub.add_parser("export", help="write all feedback as JSONL for retraining",
                        description="One JSON object per ticket: id, text (as sent by the client, unmasked; "
                                    "null if never sent), one key per head with the agent's label or null, "
                                    "and per-head provenance under 'feedback'.")
    e.add_argument("--db", default=None,
                   help=f"SQLAlchemy database URL (default: $DATABASE_URL or {DEFAULT_DATABASE_URL})")
    e.add_argument("--out", "-o", required=True, help="JSONL file to write ('-' for standard output)")
    e.add_argument("--require-text", action="store_true", help="only tickets whose text was sent")
    e.set_defaults(func=cmd_feedback_export)


def cmd_feedback_export(args) -> int:
    import json

    from sqlalchemy.exc import SQLAlchemyError

    from serve.config import DEFAULT_DATABASE_URL
    from serve.feedback import FeedbackStore, export_jsonl

    url = args.db or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    try:
        if args.out == "-":
            store = FeedbackStore(url)
            try:
                n = 0
                for row in store.iter_rows(require_text=args.require_text):
                    sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
                    n += 1
            finally:
                store.dispose()
        else:
            n = export_jsonl(url, args.out, require_text=args.require_text)
    except (SQLAlchemyError, OSError) as exc:
        print(f"triage feedback export: cannot read the feedback database: {type(exc).__name__}: "
              f"{str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"exported {n} ticket(s)" + ("" if args.out == "-" else f" to {args.out}"), file=sys.stderr)
    return 0
