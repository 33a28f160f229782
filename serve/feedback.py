"""The feedback store: agents' final labels per ticket, for retraining.

SQLAlchemy Core over two tables:

* ``feedback_tickets(ticket_id PK, text, created_at, updated_at)`` — the ticket text is
  stored **as the client sent it, unmasked**, and only when the client sends it:
  retraining needs the real text. Treat the database as holding personal data.
  Feedback without text keeps any text stored earlier.
* ``feedback_labels(ticket_id, head, label, agent, decided_at, model_version,
  received_at)`` with primary key ``(ticket_id, head)``. Storing is an upsert, so
  sending the same feedback twice changes nothing, and a row is only replaced by
  feedback whose ``decided_at`` is the same or later (a late retry of an old decision
  does not undo a newer one).

SQLite (the default, ``sqlite:///var/feedback.sqlite3``) runs in WAL mode with a busy
timeout and ``BEGIN IMMEDIATE`` write transactions, so several gunicorn workers can
write at once; ``synchronous=FULL`` makes each commit durable. PostgreSQL works
through ``DATABASE_URL=postgresql+psycopg://…`` (``postgresql://`` is mapped to
whichever of psycopg 3 / psycopg2 is installed). Engines are per process: a forked
worker never reuses its parent's connections.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

UTC = dt.timezone.utc
MAX_ID = 200
MAX_NAME = 200
MAX_LABEL = 128


@dataclass
class Feedback:
    """One submission: final labels for some heads of one ticket."""

    ticket_id: str
    labels: dict[str, str]
    agent: str | None = None
    decided_at: dt.datetime | None = None
    text: str | None = None
    model_version: str | None = None
    received_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC))


def _tables():
    from sqlalchemy import Column, DateTime, MetaData, String, Table, Text

    metadata = MetaData()
    tickets = Table(
        "feedback_tickets", metadata,
        Column("ticket_id", String(MAX_ID), primary_key=True),
        Column("text", Text, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    labels = Table(
        "feedback_labels", metadata,
        Column("ticket_id", String(MAX_ID), primary_key=True),
        Column("head", String(64), primary_key=True),
        Column("label", String(MAX_LABEL), nullable=False),
        Column("agent", String(MAX_NAME), nullable=True),
        Column("decided_at", DateTime(timezone=True), nullable=False),
        Column("model_version", String(MAX_NAME), nullable=True),
        Column("received_at", DateTime(timezone=True), nullable=False),
    )
    return metadata, tickets, labels


def normalize_url(url: str) -> str:
    """Map ``postgres://``/``postgresql://`` to an installed driver; leave others alone."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            rest = url[len(prefix):]
            try:
                import psycopg2  # noqa: F401

                return "postgresql+psycopg2://" + rest
            except ImportError:
                return "postgresql+psycopg://" + rest
    return url


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """Aware UTC datetimes in, aware UTC out (SQLite hands back naive UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _db_time(value: dt.datetime, sqlite: bool) -> dt.datetime:
    """What is written: UTC; naive for SQLite so that stored strings compare in time order."""
    value = _utc(value)
    return value.replace(tzinfo=None) if sqlite else value


class FeedbackStore:
    """Store and read feedback in one database. Safe across threads and forked processes."""

    def __init__(self, url: str):
        self.url = normalize_url(url)
        self.metadata, self.tickets, self.labels = _tables()
        self._engine = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def engine(self):
        """This process's engine, created on first use after start or fork."""
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    if self._engine is not None:
                        self._engine.dispose(close=False)  # the parent's connections stay the parent's
                    self._engine = self._create_engine()
                    self._pid = os.getpid()
        return self._engine

    def _create_engine(self):
        from sqlalchemy import create_engine, event
        from sqlalchemy.engine import make_url

        url = make_url(self.url)
        if not self.is_sqlite:
            return create_engine(url, pool_pre_ping=True, future=True)
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def init_schema(self) -> None:
        """Create the tables if they are missing."""
        self.metadata.create_all(self.engine)

    def dispose(self) -> None:
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None

    def _write(self):
        conn = self.engine.connect()
        if self.is_sqlite:
            conn = conn.execution_options(sqlite_immediate=True)
        return conn

    def _insert(self):
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert

    def store(self, fb: Feedback) -> dict:
        """Upsert one submission; return what the database now holds for its heads."""
        from sqlalchemy import func, select

        insert = self._insert()
        now = _db_time(fb.received_at, self.is_sqlite)
        decided = _db_time(fb.decided_at or fb.received_at, self.is_sqlite)
        t, lab = self.tickets, self.labels
        with self._write() as conn, conn.begin():
            ins = insert(t).values(ticket_id=fb.ticket_id, text=fb.text, created_at=now, updated_at=now)
            conn.execute(ins.on_conflict_do_update(
                index_elements=[t.c.ticket_id],
                set_={"text": func.coalesce(ins.excluded.text, t.c.text), "updated_at": ins.excluded.updated_at}))
            for head, label in fb.labels.items():
                ins = insert(lab).values(ticket_id=fb.ticket_id, head=head, label=label, agent=fb.agent,
                                         decided_at=decided, model_version=fb.model_version, received_at=now)
                conn.execute(ins.on_conflict_do_update(
                    index_elements=[lab.c.ticket_id, lab.c.head],
                    set_={"label": ins.excluded.label, "agent": ins.excluded.agent,
                          "decided_at": ins.excluded.decided_at, "model_version": ins.excluded.model_version,
                          "received_at": ins.excluded.received_at},
                    where=lab.c.decided_at <= ins.excluded.decided_at))
            rows = conn.execute(select(lab).where(lab.c.ticket_id == fb.ticket_id,
                                                  lab.c.head.in_(list(fb.labels)))).mappings().all()
        return {r["head"]: {"label": r["label"], "agent": r["agent"],
                            "decided_at": _utc(r["decided_at"]).isoformat()} for r in rows}

    def iter_rows(self, require_text: bool = False) -> Iterator[dict]:
        """One dict per ticket, ordered by ticket id; see ``load_feedback_rows``."""
        from sqlalchemy import select

        t, lab = self.tickets, self.labels
        with self.engine.connect() as conn:
            heads = sorted(h for (h,) in conn.execute(select(lab.c.head).distinct()))
            query = (select(t.c.ticket_id, t.c.text, t.c.updated_at, lab.c.head, lab.c.label, lab.c.agent,
                            lab.c.decided_at, lab.c.model_version)
                     .join(lab, lab.c.ticket_id == t.c.ticket_id)
                     .order_by(t.c.ticket_id, lab.c.head))
            current: dict | None = None
            for r in conn.execute(query).mappings():
                if current is None or current["id"] != r["ticket_id"]:
                    if current is not None and (current["text"] or not require_text):
                        yield current
                    current = {"id": r["ticket_id"], "text": r["text"], **{h: None for h in heads},
                               "feedback": {}, "updated_at": _utc(r["updated_at"]).isoformat()}
                current[r["head"]] = r["label"]
                current["feedback"][r["head"]] = {"agent": r["agent"],
                                                  "decided_at": _utc(r["decided_at"]).isoformat(),
                                                  "model_version": r["model_version"]}
            if current is not None and (current["text"] or not require_text):
                yield current


def load_feedback_rows(db_url: str, require_text: bool = False) -> list[dict]:
    """All feedback as training rows, one per ticket.

    Each row: ``{"id", "text" (None if never sent), <head>: label or None for every
    head any feedback names, "feedback": {head: {"agent", "decided_at",
    "model_version"}}, "updated_at"}`` — the shape ``training.data.read_dataset``
    reads from JSONL (extra keys are ignored there). ``require_text`` drops rows
    without text, which training cannot use.
    """
    store = FeedbackStore(db_url)
    try:
        return list(store.iter_rows(require_text=require_text))
    finally:
        store.dispose()


def export_jsonl(db_url: str, out: str | Path, require_text: bool = False) -> int:
    """Write ``load_feedback_rows`` as UTF-8 JSONL (atomically); return the row count."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    store = FeedbackStore(db_url)
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in store.iter_rows(require_text=require_text):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, out)
    finally:
        store.dispose()
        if tmp.exists():
            tmp.unlink()
    return n
