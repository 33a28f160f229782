"""The model bundle: a directory with ``manifest.json``, ONNX heads and lexicons.

Layout::

    manifest.json            schema version, heads, labels, thresholds, metrics, hashes
    features/vocabulary.json feature strings and IDF weights, in index order
    heads/<head>.onnx        one linear head per label set
    lexicons/rules.json      urgency and escalation rules
    lexicons/userdict.txt    jieba user dictionary

An ensemble bundle (tier ``ensemble``) holds whole member bundles instead of features
and heads of its own: ``linear/`` and/or ``transformer/``, each with its own manifest,
and per head the weight of every member's probabilities (chosen on a dev split).

Loading checks the schema version, that every listed file exists and matches its
SHA-256, and that label lists agree with the ONNX outputs, so a corrupt, truncated
or foreign bundle is refused with a message that says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from triage.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_KEYS = ("schema_version", "model_version", "heads", "features", "files")
ENSEMBLE_REQUIRED_KEYS = ("schema_version", "model_version", "heads", "members", "files")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: str | Path) -> dict:
    """Read and check ``manifest.json`` of a bundle directory (not the files it lists)."""
    root = Path(path)
    if not root.exists():
        raise BundleError(f"no model bundle at {root}")
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root} has no {MANIFEST}: not a triage bundle")
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is corrupt: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object")
    ensemble = manifest.get("tier") == "ensemble"
    missing = [k for k in (ENSEMBLE_REQUIRED_KEYS if ensemble else REQUIRED_KEYS) if k not in manifest]
    if missing:
        raise BundleError(f"{manifest_path} lacks {', '.join(missing)}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema version {manifest['schema_version']!r} is not supported "
            f"(this triage reads version {SCHEMA_VERSION})")
    if not isinstance(manifest["heads"], dict) or not manifest["heads"]:
        raise BundleError(f"{manifest_path} lists no heads")
    if not isinstance(manifest.get("flag_heads", {}), dict):
        raise BundleError(f"{manifest_path}: flag_heads must be an object")
    for head, spec in {**manifest["heads"], **manifest.get("flag_heads", {})}.items():
        labels = spec.get("labels") if isinstance(spec, dict) else None
        if not isinstance(labels, list) or len(labels) < 2 or len(set(labels)) != len(labels):
            raise BundleError(f"head {head!r} needs a list of at least two distinct labels")
        if ensemble:
            check_ensemble_head(head, spec, manifest["members"])
        elif "onnx" not in spec:
            raise BundleError(f"head {head!r} names no ONNX file")
    for flag, spec in manifest.get("flag_heads", {}).items():
        if set(spec["labels"]) != {"no", "yes"}:
            raise BundleError(f"flag head {flag!r} must have the labels 'no' and 'yes'")
    return manifest


def check_ensemble_head(head: str, spec: dict, members) -> None:
    """An ensemble head weighs members the bundle has, with non-negative weights summing to 1."""
    if not isinstance(members, dict) or not members:
        raise BundleError("an ensemble bundle must list its member bundles")
    weights = spec.get("weights")
    if not isinstance(weights, dict) or not weights:
        raise BundleError(f"ensemble head {head!r} has no member weights")
    unknown = sorted(set(weights) - set(members))
    if unknown:
        raise BundleError(f"ensemble head {head!r} weighs unknown members {unknown}")
    values = list(weights.values())
    if any(not isinstance(w, (int, float)) or w < 0 for w in values) or abs(sum(values) - 1) > 1e-6:
        raise BundleError(f"ensemble head {head!r}: weights must be non-negative and sum to 1, got {weights}")


def verify_files(root: Path, manifest: dict) -> None:
    """Every file the manifest lists exists and has the recorded SHA-256."""
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise BundleError("manifest lists no files")
    for rel, expected in files.items():
        path = root / rel
        if not path.is_file():
            raise BundleError(f"bundle file {rel} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"bundle file {rel} is corrupt or truncated (sha256 {actual[:12]}… ≠ {expected[:12]}…)")
    if manifest.get("tier") == "ensemble":
        referenced = [f"{folder}/{MANIFEST}" for folder in manifest["members"].values()]
    else:
        referenced = [spec["onnx"] for spec in (*manifest["heads"].values(),
                                                *manifest.get("flag_heads", {}).values())]
        referenced.append(manifest["features"].get("vocabulary", ""))
    for rel in referenced:
        if rel not in files:
            raise BundleError(f"bundle file {rel or '(vocabulary)'} is not in the manifest's file list")


def read_json_file(root: Path, rel: str) -> dict:
    try:
        return json.loads((root / rel).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle file {rel} is unreadable: {exc}") from exc
