"""Fit a linear bundle: shared TF-IDF features, one linear classifier per head.

``train(config, out_dir)`` is pure: it reads the data the config names, runs
grouped stratified k-fold cross-validation (duplicate texts stay in one fold) to get
out-of-fold probabilities, fits a temperature and per-class thresholds on those,
refits on all data and writes the bundle.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.svm import LinearSVC

from training.data import Dataset, read_dataset
from training.evaluate import (choose_thresholds, fit_temperature, head_report, softmax_t,
                               threshold_floor, urgency_decision_threshold)
from training.drift import summarize_reference
from training.export import build_time, write_bundle
from triage.calendar import BusinessCalendar
from triage.features import FeatureConfig, fit_featurizer
from triage.normalize import normalize_text
from triage.rules import load_rules
from triage.tokenize import WordTokenizer, read_userdict

RESOURCES = Path(__file__).resolve().parent.parent / "triage" / "resources"


CLASSIFIERS = {"svm": 1.0, "logreg": 10.0}
"""The linear classifiers a head may use, with their default C. Both export the same way
(one weight row per label); their scores become probabilities through the temperature
fitted on out-of-fold scores. The class-balanced SVM is the default: trained on the
corpus train split and scored on dev it beat logistic regression on every head
(macro-F1 +0.5 to +2.0 points) and trains about three times faster."""


@dataclass
class TrainConfig:
    data: list[str]
    text_column: str = "text"
    heads: dict[str, str] | None = None
    format: str | None = None
    columns: list[str] | None = None
    features: FeatureConfig = field(default_factory=FeatureConfig)
    classifier: str = "svm"
    C: float | None = None
    folds: int = 5
    seed: int = 0
    target_precision: float = 0.90
    same_day_recall: float = 0.98
    same_day_confidence: float = 0.5
    min_same_day_threshold: float = 0.05
    threshold_repeats: int = 5
    rules_in_threshold: bool = False
    rules: str | None = None
    userdict: str | None = None
    calendar: dict | None = None
    max_chars: int = 5000
    name: str = "triage"
    baselines: tuple[str, ...] = ()
    flag_heads: bool = True
    min_flag_examples: int = 10
    progress: bool = False

    def __post_init__(self):
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, not {self.classifier!r}")
        if self.C is None:
            self.C = CLASSIFIERS[self.classifier]
        if self.C <= 0:
            raise ValueError(f"C must be positive, not {self.C}")
        if self.threshold_repeats < 1:
            raise ValueError(f"threshold_repeats must be at least 1, not {self.threshold_repeats}")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["features"] = self.features.to_dict()
        out.pop("progress")
        return out


def _fit_head(X, y: np.ndarray, n_classes: int, config: TrainConfig):
    """A linear SVM (one-vs-rest, squared hinge, classes weighted to balance) or logistic
    regression (multinomial L-BFGS; liblinear, faster on sparse data, for yes/no heads)."""
    if config.classifier == "svm":
        clf = LinearSVC(C=config.C, class_weight="balanced", max_iter=20_000, random_state=config.seed)
    else:
        clf = LogisticRegression(C=config.C, max_iter=5000, random_state=config.seed,
                                 solver="liblinear" if n_classes == 2 else "lbfgs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return clf


def _coef(clf, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients as (n_classes, n_features); binary heads become a symmetric pair."""
    if n_classes == 2 and clf.coef_.shape[0] == 1:
        w, b = clf.coef_[0], clf.intercept_[0]
        return np.vstack([-w / 2, w / 2]), np.array([-b / 2, b / 2])
    return clf.coef_, clf.intercept_


def _logits(clf, X, n_classes: int) -> np.ndarray:
    coef, intercept = _coef(clf, n_classes)
    return np.asarray(X @ coef.T) + intercept


def _progress(iterable, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="step")


def _warn_rare_labels(dataset: Dataset, folds: int) -> None:
    """Say on stderr which labels have fewer rows than folds: their cross-validated scores and
    thresholds rest on almost nothing (training still goes on)."""
    for head, values in dataset.labels.items():
        counts = collections.Counter(v for v in values if v is not None)
        rare = sorted((c, lb) for lb, c in counts.items() if c < folds)
        if rare:
            listed = ", ".join(f"{lb!r} ({c})" for c, lb in rare)
            print(f"warning: {head}: fewer rows than the {folds} folds for {listed}; "
                  "their cross-validated scores and thresholds are unreliable", file=sys.stderr)


def cross_validate(config: TrainConfig, dataset: Dataset, normalized: list[str], tokenizer,
                   label_index: dict, states: list | None = None, *, seed: int | None = None,
                   only: str | None = None) -> tuple[dict, dict, np.ndarray, dict]:
    """Out-of-fold logits per head (grouped stratified k-fold), baseline predictions, the fold
    of each row, and the urgency head's out-of-fold logits with the rule states withheld.

    ``states`` are the rows' rule states, features when ``config.features.rule_states`` > 0.
    The withheld logits are the model alone, as if the rules recognised nothing: the
    same_day threshold is also held to its recall target on them (see ``train``).
    ``seed`` overrides the fold seed and ``only`` fits that one head (folds are still
    stratified as in the full run), for the repeats that pool the same_day threshold.
    """
    n = len(normalized)
    groups = np.unique(np.array(normalized), return_inverse=True)[1]
    strat_head = next(iter(dataset.labels))
    strat = np.array([v or "" for v in dataset.labels[strat_head]])
    splits_seed = config.seed if seed is None else seed
    cv = StratifiedGroupKFold(n_splits=config.folds, shuffle=True, random_state=splits_seed)
    fitted = [h for h in dataset.labels if only is None or h == only]
    oof = {h: np.zeros((n, len(label_index[h]))) for h in fitted}
    withheld = {h: np.zeros((n, len(label_index[h]))) for h in fitted
                if h == "urgency" and states is not None and config.features.rule_states > 0}
    fold_of = np.full(n, -1)
    baselines = config.baselines if only is None else ()
    baseline_preds: dict[str, dict[str, np.ndarray]] = {b: {} for b in baselines}
    if only is None:
        _warn_rare_labels(dataset, config.folds)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = list(cv.split(np.zeros(n), strat, groups))
    desc = "cross-validation" if only is None else f"same_day threshold, repeat {splits_seed - config.seed + 1}"
    for k, (tr, te) in enumerate(_progress(splits, config.progress, desc)):
        fold_of[te] = k
        tr_states, te_states = ([states[i] for i in tr], [states[i] for i in te]) if states else (None, None)
        featurizer = fit_featurizer([normalized[i] for i in tr], config.features, tokenizer, tr_states)
        X_tr = featurizer.transform([normalized[i] for i in tr], tr_states)
        X_te = featurizer.transform([normalized[i] for i in te], te_states)
        X_te_alone = featurizer.transform([normalized[i] for i in te]) if withheld else None
        for head in fitted:
            y = np.array([label_index[head].get(v, -1) for v in dataset.labels[head]])
            tr_h = tr[y[tr] >= 0]
            clf = _fit_head(X_tr[y[tr] >= 0], y[tr_h], len(label_index[head]), config)
            full = np.full((len(te), len(label_index[head])), -1e4)
            full[:, clf.classes_] = _logits(clf, X_te, len(clf.classes_))
            oof[head][te] = full
            if head in withheld:
                alone = np.full_like(full, -1e4)
                alone[:, clf.classes_] = _logits(clf, X_te_alone, len(clf.classes_))
                withheld[head][te] = alone
            for name in baselines:
                from training.baselines import fit_predict_baseline

                pred = fit_predict_baseline(name, [normalized[i] for i in tr_h], y[tr_h],
                                            [normalized[i] for i in te], seed=config.seed)
                baseline_preds[name].setdefault(head, np.full(n, -1))[te] = pred
    return oof, baseline_preds, fold_of, withheld


FLAG_PREFIX = "flag:"


def add_flag_heads(dataset: Dataset, min_examples: int) -> list[str]:
    """Add a yes/no head ``flag:<name>`` for every escalation flag with enough examples."""
    if not dataset.flags:
        return []
    counts: dict[str, int] = {}
    for flags in dataset.flags:
        for flag in set(flags):
            counts[flag] = counts.get(flag, 0) + 1
    names = sorted(f for f, c in counts.items() if c >= min_examples and len(dataset) - c >= min_examples)
    for flag in names:
        dataset.labels[FLAG_PREFIX + flag] = ["yes" if flag in flags else "no" for flags in dataset.flags]
    return names


def flag_decision_threshold(gold: np.ndarray, p_yes: np.ndarray, rule_fired: np.ndarray,
                            target_precision: float) -> float:
    """Lowest P(yes) at which flags the model adds beyond the rules are still precise enough.

    Out-of-fold predictions only; returns 1.01 (the model never adds a flag) when no
    threshold reaches the target.
    """
    extra = ~rule_fired
    order = np.argsort(-p_yes[extra])
    hits = gold[extra][order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    ok = np.nonzero((precision >= target_precision) & (np.arange(1, len(hits) + 1) >= 3))[0]
    return float(max(0.5, p_yes[extra][order][ok[-1]])) if len(ok) else 1.01


def _same_day_threshold(config: TrainConfig, dataset: Dataset, normalized: list[str], tokenizer,
                        label_index: dict, states, rules, keep: np.ndarray, y: np.ndarray, labels: list[str],
                        probs: list[np.ndarray], temperature: float) -> float:
    """The same_day decision threshold, on out-of-fold scores pooled over ``threshold_repeats``
    cross-validations with different fold seeds.

    The threshold is a low quantile of the same_day rows' scores (the largest at which the
    model alone still reaches its recall target), so it rests on a few dozen rows in the
    tail, and which fold a row falls in moves their scores: on the 14,288-record corpus one
    5-fold run put it anywhere from 0.133 to 0.164 by seed alone. Pooling the repeats' scores
    (each row once per repeat) estimates the same quantile with less of that noise. ``probs``
    are the first run's probabilities (and, with rule states, those with the states withheld);
    every repeat adds its own, calibrated with the first run's temperature.
    """
    runs = [list(probs)]
    for r in range(1, config.threshold_repeats):
        oof, _, _, withheld = cross_validate(config, dataset, normalized, tokenizer, label_index, states,
                                             seed=config.seed + r, only="urgency")
        runs.append([softmax_t(oof["urgency"][keep], temperature)]
                    + ([softmax_t(withheld["urgency"][keep], temperature)] if "urgency" in withheld else []))
    floor = threshold_floor(rules, [t for t, k in zip(normalized, keep) if k], config.rules_in_threshold)
    reps = len(runs)
    chosen = [urgency_decision_threshold(np.tile(y, reps), np.concatenate([run[v] for run in runs]), labels,
                                         np.tile(floor, reps), config.same_day_recall, config.same_day_confidence,
                                         copies=reps)
              for v in range(len(probs))]
    return max(config.min_same_day_threshold, min(chosen))


def train(config: TrainConfig, out_dir: str | Path) -> dict:
    """Cross-validate, calibrate, refit on all data and write the bundle; return the manifest."""
    dataset = read_dataset([Path(p) for p in config.data], text_column=config.text_column,
                           heads=config.heads, fmt=config.format, columns=config.columns)
    flag_names = add_flag_heads(dataset, config.min_flag_examples) if config.flag_heads else []
    normalized = [normalize_text(t) for t in dataset.texts]
    userdict_path = Path(config.userdict) if config.userdict else RESOURCES / "userdict.txt"
    rules_path = Path(config.rules) if config.rules else RESOURCES / "rules.json"
    tokenizer = WordTokenizer(read_userdict(userdict_path), memo=True) if config.features.words else None
    label_index = {h: {lb: i for i, lb in enumerate(sorted({v for v in vals if v is not None}))}
                   for h, vals in dataset.labels.items()}
    labels = {h: sorted(idx, key=idx.get) for h, idx in label_index.items()}

    rules = load_rules(rules_path)
    analyses = [rules.analyze(t) for t in normalized]
    states = [a[1] for a in analyses]
    oof_logits, baseline_preds, _, withheld = cross_validate(config, dataset, normalized, tokenizer, label_index,
                                                             states)
    heads_out, cv_report, oof_probs = {}, {}, {}
    for head, values in dataset.labels.items():
        y = np.array([label_index[head].get(v, -1) for v in values])
        m = y >= 0
        temperature = fit_temperature(oof_logits[head][m], y[m])
        probs = softmax_t(oof_logits[head][m], temperature)
        oof_probs[head] = probs
        thresholds = choose_thresholds(y[m], probs, labels[head], config.target_precision)
        report = head_report(y[m], probs, labels[head], thresholds)
        decision = {}
        if head.startswith(FLAG_PREFIX):
            flag = head[len(FLAG_PREFIX):]
            fired = np.array([any(h.flag == flag for h in hits) for (hits, _), keep in zip(analyses, m) if keep])
            decision["flag_threshold"] = flag_decision_threshold(
                y[m] == labels[head].index("yes"), probs[:, labels[head].index("yes")], fired,
                config.target_precision)
        if head == "urgency" and set(labels[head]) == {"same_day", "within_24h", "normal"}:
            decision["same_day_threshold"] = _same_day_threshold(
                config, dataset, normalized, tokenizer, label_index, states, rules, m, y[m], labels[head],
                [probs] + ([softmax_t(withheld[head][m], temperature)] if head in withheld else []), temperature)
        for name, preds in baseline_preds.items():
            report.setdefault("baselines", {})[name] = {
                k: v for k, v in head_report(y[m], np.eye(len(labels[head]))[preds[head][m]],
                                             labels[head]).items() if k in ("accuracy", "macro_f1", "per_class")}
        cv_report[head] = report
        heads_out[head] = {"labels": labels[head], "temperature": temperature, "thresholds": thresholds,
                           "decision": decision,
                           "metrics": {"cv_accuracy": report["accuracy"], "cv_macro_f1": report["macro_f1"],
                                       "coverage_at_target": report["at_thresholds"]["coverage"]}}

    featurizer = fit_featurizer(normalized, config.features, tokenizer, states)
    X = featurizer.transform(normalized, states)
    for head, values in _progress(dataset.labels.items(), config.progress, "final fit", len(dataset.labels)):
        y = np.array([label_index[head].get(v, -1) for v in values])
        m = y >= 0
        clf = _fit_head(X[m], y[m], len(labels[head]), config)
        coef, intercept = _coef(clf, len(labels[head]))
        heads_out[head]["coef"], heads_out[head]["intercept"] = coef, intercept

    created_at = build_time()
    version = f"{config.name}-{dataset.sha256[:8]}-{created_at[:10].replace('-', '')}"
    extra = {
        "model_version": version, "name": config.name, "created_at": created_at, "tier": "linear",
        "calendar": BusinessCalendar.from_dict(config.calendar).to_dict(),
        "limits": {"max_chars": config.max_chars},
        "training": {"data_sha256": dataset.sha256, "sources": [Path(s).name for s in dataset.sources],
                     "n_rows": len(dataset), "label_counts": dataset.label_counts(),
                     "config": config.to_dict()},
        "metrics": {"cv": {"folds": config.folds, "grouped_duplicates": True, "heads": cv_report}},
        "reference": summarize_reference({h: p for h, p in oof_probs.items() if not h.startswith(FLAG_PREFIX)},
                                         labels),
        "flags": flag_names,
    }
    return write_bundle(Path(out_dir), featurizer=featurizer, heads=heads_out, rules_path=rules_path,
                        userdict_path=userdict_path if tokenizer else None, extra=extra)
