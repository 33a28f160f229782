"""The label taxonomy as data: codes, Chinese names, definitions, default departments.

Deployments override it with their own JSON file of the same shape; a bundle trained
on other label sets carries its own label lists and needs no taxonomy entry for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from triage.errors import TaxonomyError

DEFAULT_TAXONOMY = "taxonomy.json"


@dataclass(frozen=True)
class Taxonomy:
    heads: dict
    flags: dict
    sla: dict

    def labels(self, head: str) -> list[str]:
        try:
            return list(self.heads[head]["labels"])
        except KeyError:
            raise TaxonomyError(f"taxonomy has no head {head!r}") from None

    def display_name(self, head: str, code: str) -> str:
        entry = self.heads.get(head, {}).get("labels", {}).get(code)
        return entry["zh"] if entry else code

    def default_department(self, category: str) -> str | None:
        entry = self.heads.get("category", {}).get("labels", {}).get(category)
        return entry.get("default_department") if entry else None

    def to_dict(self) -> dict:
        return {"heads": self.heads, "flags": self.flags, "sla": self.sla}


def taxonomy_from_dict(data: dict) -> Taxonomy:
    """Build and check a taxonomy from its JSON form."""
    if not isinstance(data, dict) or not isinstance(data.get("heads"), dict):
        raise TaxonomyError("taxonomy must be an object with a 'heads' object")
    for head, spec in data["heads"].items():
        labels = spec.get("labels") if isinstance(spec, dict) else None
        if not isinstance(labels, dict) or not labels:
            raise TaxonomyError(f"taxonomy head {head!r} needs a non-empty 'labels' object")
    categories = data["heads"].get("category", {}).get("labels", {})
    departments = data["heads"].get("department", {}).get("labels", {})
    for code, entry in categories.items():
        dept = entry.get("default_department")
        if departments and dept is not None and dept not in departments:
            raise TaxonomyError(f"category {code!r} defaults to unknown department {dept!r}")
    return Taxonomy(heads=data["heads"], flags=data.get("flags", {}), sla=data.get("sla", {}))


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load the default taxonomy, or a deployment's own JSON file."""
    if path is None:
        text = resources.files("triage.resources").joinpath(DEFAULT_TAXONOMY).read_text("utf-8")
    else:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise TaxonomyError(f"cannot read taxonomy {path}: {exc}") from exc
    try:
        return taxonomy_from_dict(json.loads(text))
    except json.JSONDecodeError as exc:
        raise TaxonomyError(f"taxonomy {path or DEFAULT_TAXONOMY} is not valid JSON: {exc}") from exc
