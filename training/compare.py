"""``triage compare``: how two bundles differ on the same tickets.

Metric deltas per head (from ``evaluate_bundle``, when the data is labelled) and the
tickets whose labels changed, grouped by old→new label, with PII-masked examples.
"""

from __future__ import annotations

import json
from pathlib import Path

from triage.normalize import mask_pii

EXAMPLES = 5
TEXT_CHARS = 200
METRICS = ("accuracy", "macro_f1")


def read_tickets(paths, *, text_column: str = "text", heads: dict | None = None, fmt: str | None = None,
                 columns: list | None = None) -> tuple[list[str], dict[str, list], bool]:
    """Texts, gold labels per head (empty when the data has none) and whether it is labelled."""
    from training.data import DEFAULT_HEADS, iter_rows, read_dataset

    paths = [Path(p) for p in paths]
    first = next(iter_rows(paths[0], fmt, columns), None)
    if first is None:
        raise ValueError(f"no rows in {paths[0]}")
    if heads or any(h in first for h in DEFAULT_HEADS):
        dataset = read_dataset(paths, text_column=text_column, heads=heads, fmt=fmt, columns=columns)
        return dataset.texts, dataset.labels, True
    texts = []
    for p in paths:
        for k, row in enumerate(iter_rows(p, fmt, columns), 1):
            text = row.get(text_column)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{p}: row {k}: empty or missing text")
            texts.append(text)
    return texts, {}, False


def compute_metric_deltas(old: dict, new: dict) -> dict:
    """Per head: old, new and new − old of accuracy, macro-F1, coverage and per-class F1."""
    out = {}
    for head in [h for h in old["heads"] if h in new["heads"]]:
        o, n = old["heads"][head], new["heads"][head]
        entry = {}
        for key in METRICS:
            entry[key] = _delta(o.get(key), n.get(key))
        for key in ("coverage", "precision"):
            entry[f"{key}_at_thresholds"] = _delta((o.get("at_thresholds") or {}).get(key),
                                                   (n.get("at_thresholds") or {}).get(key))
        entry["per_class_f1"] = {lb: _delta((o["per_class"].get(lb) or {}).get("f1"),
                                            (n["per_class"].get(lb) or {}).get("f1"))
                                 for lb in sorted(o["per_class"].keys() | n["per_class"].keys())}
        out[head] = entry
    if "same_day" in old and "same_day" in new:
        out["same_day"] = {k: _delta(old["same_day"][k], new["same_day"][k]) for k in ("recall", "precision")}
    return out


def _delta(old, new) -> dict:
    diff = round(new - old, 4) if old is not None and new is not None else None
    return {"old": old, "new": new, "delta": diff}


def group_changes(texts: list[str], old: list[str], new: list[str], gold: list | None = None,
                  old_conf=None, new_conf=None, examples: int = EXAMPLES) -> dict:
    """Tickets whose label changed, grouped by ``old→new``, most frequent group first.

    With gold labels each group also counts ``fixed`` (new is right, old was wrong) and
    ``broken`` (old was right, new is wrong).
    """
    groups: dict[tuple[str, str], dict] = {}
    for i, (a, b) in enumerate(zip(old, new)):
        if a == b:
            continue
        g = groups.setdefault((a, b), {"from": a, "to": b, "count": 0, "examples": []})
        g["count"] += 1
        if gold is not None and gold[i] is not None:
            g["fixed"] = g.get("fixed", 0) + int(b == gold[i])
            g["broken"] = g.get("broken", 0) + int(a == gold[i])
        if len(g["examples"]) < examples:
            ex = {"row": i + 1, "text": mask_pii(texts[i])[:TEXT_CHARS]}
            if gold is not None:
                ex["true"] = gold[i]
            if old_conf is not None:
                ex["old_confidence"] = round(float(old_conf[i]), 4)
                ex["new_confidence"] = round(float(new_conf[i]), 4)
            g["examples"].append(ex)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], g["from"], g["to"]))
    changed = sum(g["count"] for g in ordered)
    out = {"n": len(old), "changed": changed, "changed_rate": round(changed / len(old), 4) if old else 0.0,
           "groups": ordered}
    if gold is not None:
        out["fixed"] = sum(g.get("fixed", 0) for g in ordered)
        out["broken"] = sum(g.get("broken", 0) for g in ordered)
    return out


def compare_bundles(old_path, new_path, data, *, text_column: str = "text", heads: dict | None = None,
                    fmt: str | None = None, columns: list | None = None, examples: int = EXAMPLES,
                    batch_size: int = 512) -> dict:
    """Score the same tickets with both bundles; metric deltas and grouped label changes."""
    from training.evaluate import evaluate_bundle
    from training.report import score_texts
    from triage.model import load

    data = [data] if isinstance(data, (str, Path)) else list(data)
    texts, gold, labelled = read_tickets(data, text_column=text_column, heads=heads, fmt=fmt, columns=columns)
    old_model, new_model = load(old_path), load(new_path)
    old_res = score_texts(old_model, texts, batch_size)
    new_res = score_texts(new_model, texts, batch_size)
    common = [h for h in old_model.heads if h in new_model.heads]
    report: dict = {"old": {"path": str(old_path), "model": old_model.model_version},
                    "new": {"path": str(new_path), "model": new_model.model_version},
                    "data": [str(p) for p in data], "n": len(texts), "labelled": labelled,
                    "heads_only_old": sorted(set(old_model.heads) - set(new_model.heads)),
                    "heads_only_new": sorted(set(new_model.heads) - set(old_model.heads)),
                    "labels": {}, "changes": {}}
    any_changed = [False] * len(texts)
    for head in common:
        old_labels, new_labels = old_model.heads[head].labels, new_model.heads[head].labels
        report["labels"][head] = {"added": sorted(set(new_labels) - set(old_labels)),
                                  "removed": sorted(set(old_labels) - set(new_labels))}
        a = [r.heads[head].label for r in old_res]
        b = [r.heads[head].label for r in new_res]
        report["changes"][head] = group_changes(texts, a, b, gold.get(head),
                                                [r.heads[head].confidence for r in old_res],
                                                [r.heads[head].confidence for r in new_res], examples)
        any_changed = [c or x != y for c, x, y in zip(any_changed, a, b)]
    report["changed_any_head"] = sum(any_changed)
    if labelled:
        kwargs = dict(text_column=text_column, heads=heads, fmt=fmt, columns=columns, batch_size=batch_size)
        report["metrics"] = compute_metric_deltas(evaluate_bundle(old_path, data, **kwargs),
                                          evaluate_bundle(new_path, data, **kwargs))
    return report


def format_comparison(report: dict, groups: int = 10) -> str:
    """A readable summary of ``compare_bundles``' result."""
    lines = [f"old  {report['old']['model']}  ({report['old']['path']})",
             f"new  {report['new']['model']}  ({report['new']['path']})",
             f"data {', '.join(report['data'])}: {report['n']} tickets; "
             f"{report['changed_any_head']} changed in at least one head", ""]
    for key in ("heads_only_old", "heads_only_new"):
        if report[key]:
            lines.append(f"{key.replace('_', ' ')}: {', '.join(report[key])}")
    metrics = report.get("metrics", {})
    if metrics:
        lines.append(f"{'head':<12} {'metric':<26} {'old':>8} {'new':>8} {'delta':>8}")
        for head, entry in metrics.items():
            for key, d in entry.items():
                if key == "per_class_f1":
                    continue
                lines.append(f"{head:<12} {key:<26} {_num(d['old'])} {_num(d['new'])} {_num(d['delta'], True)}")
        lines.append("")
    for head, ch in report["changes"].items():
        extra = f"; fixed {ch['fixed']}, broken {ch['broken']}" if "fixed" in ch else ""
        labels = report["labels"].get(head, {})
        for key in ("added", "removed"):
            if labels.get(key):
                extra += f"; labels {key}: {', '.join(labels[key])}"
        lines.append(f"{head}: {ch['changed']} of {ch['n']} changed ({ch['changed_rate']:.1%}){extra}")
        for g in ch["groups"][:groups]:
            fb = f"  (fixed {g['fixed']}, broken {g['broken']})" if "fixed" in g else ""
            lines.append(f"  {g['from']} → {g['to']}: {g['count']}{fb}")
            if g["examples"]:
                lines.append(f"      e.g. row {g['examples'][0]['row']}: {g['examples'][0]['text'][:60]}")
        if len(ch["groups"]) > groups:
            lines.append(f"  … {len(ch['groups']) - groups} more groups in the JSON")
    return "\n".join(lines)


def _num(value, signed: bool = False) -> str:
    if value is None:
        return f"{'–':>8}"
    return f"{value:>+8.4f}" if signed else f"{value:>8.4f}"


def write_comparison(report: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=1), "utf-8")
