"""Combine a linear and a transformer bundle head by head: ``build_ensemble(config, out_dir)``.

For each head both members predict, the served probabilities are
``(1 - w) * linear + w * transformer`` with ``w`` chosen on a dev split from a grid
(``w = 0`` keeps the linear head alone, ``w = 1`` the transformer's), by dev log-loss,
ties going to the higher macro-F1. Log-loss, a proper scoring rule, changes smoothly
with ``w``; macro-F1 on a dev split of a few hundred rows is flat within a few texts
across the grid, so picking its maximum picks noise (on the COCC folds, 180 dev texts
chose ``w = 0.9`` for a transformer that was 3-6 points behind on test). A temperature
on the mixture, the per-class review thresholds and the same_day decision threshold are
then fitted on the same dev split, so every number a head serves comes from data neither
member was fitted on: the linear member must not have been trained on the dev rows, and
the transformer may have used them only to stop early. The test split is never read here.

Members are scored through ``triage.load``, the code that serves them, so the
dev-split metrics recorded in the manifest are those of the exported ONNX files.
When the transformer member also ships its fp32 file (``--keep-fp32``), each mixed
head records ``int8_agreement``: the share of dev rows whose served label stays the
same with the fp32 encoder, beside the transformer's own int8/fp32 agreement.
The urgency head also keeps the linear member's own same_day decision as a floor
(``decision.member_floor``): the mixture's same_day threshold is a point estimate on a
few hundred dev rows, the linear member's was fitted on out-of-fold predictions of its
whole training set at the confidence it was trained for, so combining tiers never
lowers same_day recall below the linear tier's. A member no head gives weight is left
out of the bundle, except a linear member that carries escalation-flag heads (they,
their evidence and the rules come with it) or the same_day floor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import read_dataset
from training.evaluate import (choose_thresholds, fit_temperature, head_report, threshold_floor,
                               urgency_decision_threshold)
from training.export import build_time, finish_bundle, library_versions, start_bundle
from training.transformer.export import ONNX_FP32
from triage.bundle import SCHEMA_VERSION
from triage.model import load, sharpen
from triage.normalize import normalize_text
from triage.rules import load_rules

GRID = tuple(round(k / 10, 1) for k in range(11))
MEMBERS = ("linear", "transformer")


@dataclass
class EnsembleConfig:
    linear: str
    transformer: str
    dev_data: list[str]
    text_column: str = "text"
    heads: dict[str, str] | None = None
    format: str | None = None
    columns: list[str] | None = None
    grid: tuple[float, ...] = GRID
    target_precision: float = 0.90
    same_day_recall: float = 0.98
    same_day_confidence: float = 0.5
    min_same_day_threshold: float = 0.05
    rules_in_threshold: bool = False
    name: str = "triage-ensemble"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    return float(-np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12)).mean())


def choose_weight(y: np.ndarray, p_linear: np.ndarray, p_transformer: np.ndarray, labels: list[str],
                  grid: tuple[float, ...]) -> tuple[float, list[dict]]:
    """The transformer weight with the lowest dev log-loss (then the best macro-F1); every grid point scored."""
    scored = []
    for w in grid:
        mixed = (1 - w) * p_linear + w * p_transformer
        rep = head_report(y, mixed, labels)
        scored.append({"weight": w, "macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"],
                       "log_loss": round(log_loss(y, mixed), 5)})
    best = min(scored, key=lambda r: (r["log_loss"], -r["macro_f1"]))
    return best["weight"], scored


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return round(float((a.argmax(1) == b.argmax(1)).mean()), 4)


def _data_sha(texts: list[str], labels: dict) -> str:
    return hashlib.sha256(json.dumps([texts, labels], ensure_ascii=False).encode("utf-8")).hexdigest()


def build_ensemble(config: EnsembleConfig, out_dir: str | Path) -> dict:
    """Choose per-head weights on the dev split and write an ensemble bundle; return its manifest."""
    out_dir = Path(out_dir)
    members = {"linear": load(config.linear), "transformer": load(config.transformer)}
    for name, model in members.items():
        if model.tier != name:
            raise ValueError(f"--{name} {getattr(config, name)} is a {model.tier} bundle, not a {name} one")
    dev = read_dataset([Path(p) for p in config.dev_data], text_column=config.text_column, heads=config.heads,
                       fmt=config.format, columns=config.columns)
    owners: dict[str, list[str]] = {}
    for name in MEMBERS:
        for h in members[name].heads:
            owners.setdefault(h, []).append(name)
    labels = {h: members[names[0]].heads[h].labels for h, names in owners.items()}
    for h, names in owners.items():
        if len(names) == 2 and sorted(labels[h]) != sorted(members["transformer"].heads[h].labels):
            raise ValueError(f"head {h!r}: the members predict different labels "
                             f"({labels[h]} vs {members['transformer'].heads[h].labels})")
        if len(names) == 2 and h not in dev.labels:
            raise ValueError(f"head {h!r} is in both members but the dev data has no {h!r} labels to weigh them")
    normalized = [normalize_text(t) for t in dev.texts]
    probs = {}
    for name, model in members.items():
        p = model.predict_proba(normalized)
        probs[name] = {h: p[h][:, [model.heads[h].labels.index(lb) for lb in labels[h]]].astype(np.float64)
                       for h in model.heads}
    linear_manifest = members["linear"].manifest
    rules_rel = linear_manifest.get("rules")
    rules_path = members["linear"].path / rules_rel if rules_rel else None
    rules = load_rules(rules_path) if rules_path else None

    fp32_probs = None
    shipped = members["transformer"].manifest.get("features", {}).get("onnx", {}).get("available", [])
    if ONNX_FP32 in shipped and members["transformer"].scorer.onnx_file != ONNX_FP32:
        fp32_model = load(config.transformer, onnx_file=ONNX_FP32, verify=False)  # hashed as a member above
        fp32_probs = {h: p[:, [fp32_model.heads[h].labels.index(lb) for lb in labels[h]]].astype(np.float64)
                      for h, p in fp32_model.predict_proba(normalized).items()}
    heads_out, dev_metrics, agreement = {}, {}, {}
    for h, names in owners.items():
        if h not in dev.labels:  # served by its one member as trained
            spec = members[names[0]].manifest["heads"][h]
            heads_out[h] = {"labels": labels[h], "weights": {names[0]: 1.0}, "temperature": 1.0,
                            "thresholds": spec.get("thresholds", {}), "decision": spec.get("decision", {}),
                            "metrics": {}}
            continue
        index = {lb: i for i, lb in enumerate(labels[h])}
        keep = np.array([v in index for v in dev.labels[h]])
        if keep.sum() < 2 * len(labels[h]):
            raise ValueError(f"head {h!r}: only {int(keep.sum())} dev rows carry one of its labels")
        y = np.array([index[v] for v in dev.labels[h] if v in index])
        member_probs = {name: probs[name][h][keep] for name in names}
        if len(names) == 2:
            weight, grid = choose_weight(y, member_probs["linear"], member_probs["transformer"], labels[h],
                                         config.grid)
            weights = {"linear": round(1 - weight, 6), "transformer": weight}
        else:
            grid, weights = [], {names[0]: 1.0}
        mixed = sum(w * member_probs[name] for name, w in weights.items())
        mixing = sum(w > 0 for w in weights.values()) > 1
        temperature = fit_temperature(np.log(np.maximum(mixed, 1e-12)), y) if mixing else 1.0
        served = sharpen(mixed, temperature)
        thresholds = choose_thresholds(y, served, labels[h], config.target_precision)
        decision = {}
        if h == "urgency" and set(labels[h]) == {"same_day", "within_24h", "normal"} and rules is not None:
            floor = threshold_floor(rules, [t for t, k in zip(normalized, keep) if k], config.rules_in_threshold)
            decision["same_day_threshold"] = max(config.min_same_day_threshold, urgency_decision_threshold(
                y, served, labels[h], floor, config.same_day_recall, config.same_day_confidence))
            linear_head = members["linear"].heads.get(h)
            if linear_head is not None and "same_day_threshold" in linear_head.decision:
                decision["member_floor"] = "linear"
        report = head_report(y, served, labels[h], thresholds)
        if fp32_probs is not None and weights.get("transformer", 0) > 0:
            ref = sharpen(sum(w * (fp32_probs[h][keep] if name == "transformer" else member_probs[name])
                              for name, w in weights.items()), temperature)
            agreement[h] = {"served": _agree(served, ref),
                            "transformer": _agree(member_probs["transformer"], fp32_probs[h][keep])}
        heads_out[h] = {"labels": labels[h], "weights": weights, "temperature": temperature,
                        "thresholds": thresholds, "decision": decision,
                        "metrics": {"dev_accuracy": report["accuracy"], "dev_macro_f1": report["macro_f1"],
                                    "coverage_at_target": report["at_thresholds"]["coverage"]}}
        dev_metrics[h] = {"weights": weights, "grid": grid, "ensemble": report, "n": int(keep.sum()),
                          "rows_with_unknown_labels": int(sum(v is not None and v not in index
                                                              for v in dev.labels[h])),
                          **{name: {k: v for k, v in head_report(y, member_probs[name], labels[h]).items()
                                    if k in ("accuracy", "macro_f1")} for name in names}}
        if h in agreement:
            dev_metrics[h]["int8_agreement"] = agreement[h]

    used = {m for spec in heads_out.values() for m, w in spec["weights"].items() if w > 0}
    if members["linear"].flag_heads or any(spec["decision"].get("member_floor") for spec in heads_out.values()):
        used.add("linear")
    for spec in heads_out.values():
        spec["weights"] = {m: w for m, w in spec["weights"].items() if m in used}
    tmp = start_bundle(out_dir, "lexicons")
    for name in MEMBERS:
        if name in used:
            src = members[name].path
            shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("*.tmp"))
    if rules_path:
        shutil.copyfile(rules_path, tmp / "lexicons" / "rules.json")
    created_at = build_time()
    versions = {m: members[m].model_version for m in MEMBERS if m in used}
    dev_sha = _data_sha(dev.texts, dev.labels)
    digest = hashlib.sha256(json.dumps([versions, dev_sha, heads_out], sort_keys=True).encode()).hexdigest()
    manifest = {
        "schema_version": SCHEMA_VERSION, "tier": "ensemble",
        "model_version": f"{config.name}-{digest[:8]}-{created_at[:10].replace('-', '')}",
        "name": config.name, "created_at": created_at,
        "members": {m: m for m in MEMBERS if m in used}, "heads": heads_out,
        "calendar": linear_manifest.get("calendar"),
        "limits": {"max_chars": min(members[m].max_chars for m in MEMBERS)},
        "training": {"members": versions, "dev": {"sources": [Path(s).name for s in dev.sources],
                                                  "data_sha256": dev_sha, "n_rows": len(dev)},
                     "config": config.to_dict()},
        "metrics": {"dev": {"heads": dev_metrics}},
        "library_versions": library_versions(),
    }
    if rules_path:
        manifest["rules"] = "lexicons/rules.json"
    return finish_bundle(tmp, out_dir, manifest)


def summarize(manifest: dict) -> list[str]:
    """One line per head: the chosen weight and the dev macro-F1 of each member and of the mixture."""
    lines = []
    for head, m in manifest["metrics"]["dev"]["heads"].items():
        members = ", ".join(f"{name} {m[name]['macro_f1']}" for name in MEMBERS if name in m)
        weights = ", ".join(f"{name} {w}" for name, w in m["weights"].items())
        line = f"{head}: weights {weights}; dev macro-F1 {members}, served {m['ensemble']['macro_f1']} (n {m['n']})"
        if "int8_agreement" in m:
            line += (f"; int8/fp32 label agreement served {m['int8_agreement']['served']}, "
                     f"transformer alone {m['int8_agreement']['transformer']}")
        lines.append(line)
    return lines


