"""Reading labelled data: CSV, TSV or JSONL, configurable text and label columns."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HEADS = ("category", "department", "urgency", "sentiment")
FORMATS = ("csv", "tsv", "jsonl")


@dataclass
class Dataset:
    texts: list[str]
    labels: dict[str, list[str | None]]  # head -> label per row (None: unlabelled for that head)
    sha256: str
    sources: list[str]
    flags: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def label_counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for head, values in self.labels.items():
            counts: dict[str, int] = {}
            for v in values:
                if v is not None:
                    counts[v] = counts.get(v, 0) + 1
            out[head] = dict(sorted(counts.items()))
        return out


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in ("csv", "tsv"):
        return suffix
    raise ValueError(f"cannot tell the format of {path}; pass --format")


def iter_rows(path: Path, fmt: str | None = None, columns: list[str] | None = None):
    """Yield dict rows; ``columns`` names the fields of a header-less CSV/TSV."""
    fmt = detect_format(path, fmt)
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{lineno}: invalid JSON: {exc}") from exc
                    if not isinstance(row, dict):
                        raise ValueError(f"{path}:{lineno}: each line must be a JSON object")
                    yield row
        return
    delimiter = "\t" if fmt == "tsv" else ","
    with open(path, encoding="utf-8-sig", newline="") as fh:
        if fmt == "tsv":
            reader = csv.reader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(fh, delimiter=delimiter)
        header = columns or next(reader, None)
        if header is None:
            return
        for lineno, values in enumerate(reader, 2 if columns is None else 1):
            if not values:
                continue
            if len(values) != len(header):
                raise ValueError(f"{path}:{lineno}: expected {len(header)} fields, found {len(values)}")
            yield dict(zip(header, values))


def file_sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_dataset(paths: list[Path], *, text_column: str = "text", heads: dict[str, str] | None = None,
                 fmt: str | None = None, columns: list[str] | None = None,
                 flag_column: str = "escalation") -> Dataset:
    """Read labelled rows. ``heads`` maps head name to column; default: the standard
    heads that the data has. Rows with empty text are an error, not silently dropped."""
    paths = [Path(p) for p in paths]
    rows = [row for p in paths for row in iter_rows(p, fmt, columns)]
    if not rows:
        raise ValueError(f"no rows in {', '.join(map(str, paths))}")
    if text_column not in rows[0]:
        raise ValueError(f"no text column {text_column!r}; columns are {sorted(rows[0])}")
    if heads is None:
        heads = {h: h for h in DEFAULT_HEADS if h in rows[0]}
        if not heads:
            raise ValueError(f"no label columns found (looked for {', '.join(DEFAULT_HEADS)}); "
                             "name them with --head NAME=COLUMN")
    texts, labels = [], {h: [] for h in heads}
    for k, row in enumerate(rows):
        text = row.get(text_column)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"row {k + 1}: empty or missing text")
        texts.append(text)
        for head, col in heads.items():
            value = row.get(col)
            labels[head].append(str(value).strip() if value not in (None, "") else None)
    for head, values in labels.items():
        distinct = {v for v in values if v is not None}
        if len(distinct) < 2:
            raise ValueError(f"head {head!r} needs at least two distinct labels, found {sorted(distinct)}")
    flags = [parse_flags(row.get(flag_column)) for row in rows] if flag_column in rows[0] else None
    return Dataset(texts=texts, labels=labels, sha256=file_sha256(paths),
                   sources=[str(p) for p in paths], flags=flags)


def parse_flags(value) -> list[str]:
    """Escalation flags from a JSON list, a JSON-encoded list or a comma/semicolon string."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    if text.startswith("["):
        try:
            return parse_flags(json.loads(text))
        except json.JSONDecodeError:
            pass
    return [v.strip() for v in text.replace(";", ",").split(",") if v.strip()]
