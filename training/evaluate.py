"""Metrics, calibration and thresholds; JSON and Markdown reports."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

MIN_SUPPORT_FOR_THRESHOLD = 5


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T)."""
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return -float(log_softmax(logits / np.exp(log_t), axis=1)[rows, y].mean())

    res = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(res.x))


def choose_thresholds(y: np.ndarray, probs: np.ndarray, labels: list[str], target_precision: float) -> dict:
    """Per predicted class, the lowest confidence at which precision reaches the target.

    Candidates are the confidences of the predictions of that class, ranked from the
    highest; the threshold is the lowest one whose above-threshold precision is still
    >= target. A class that never reaches the target gets 1.0 (always reviewed).
    """
    pred = probs.argmax(1)
    conf = probs.max(1)
    out = {}
    for c, label in enumerate(labels):
        mask = pred == c
        if mask.sum() < MIN_SUPPORT_FOR_THRESHOLD:
            out[label] = 1.0
            continue
        order = np.argsort(-conf[mask])
        correct = (y[mask] == c)[order]
        precision = np.cumsum(correct) / np.arange(1, len(correct) + 1)
        ok = np.nonzero(precision >= target_precision)[0]
        # the deepest prefix that still meets the target
        out[label] = float(conf[mask][order][ok[-1]]) if len(ok) else 1.0
    return out


def coverage_at_thresholds(y: np.ndarray, probs: np.ndarray, labels: list[str], thresholds: dict) -> dict:
    pred = probs.argmax(1)
    conf = probs.max(1)
    t = np.array([thresholds[lb] for lb in labels])[pred]
    auto = conf >= t
    return {"coverage": float(auto.mean()) if len(y) else 0.0,
            "precision": float((pred[auto] == y[auto]).mean()) if auto.any() else None}


def classification_metrics(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict:
    n = len(labels)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = {}
    f1s = []
    for c, label in enumerate(labels):
        tp = cm[c, c]
        p = tp / cm[:, c].sum() if cm[:, c].sum() else 0.0
        r = tp / cm[c, :].sum() if cm[c, :].sum() else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        per_class[label] = {"precision": round(float(p), 4), "recall": round(float(r), 4),
                            "f1": round(float(f1), 4), "support": int(cm[c, :].sum())}
        if cm[c, :].sum():
            f1s.append(f1)
    return {"n": int(len(y)), "accuracy": round(float((y == pred).mean()), 4) if len(y) else None,
            "macro_f1": round(float(np.mean(f1s)), 4) if f1s else None,
            "per_class": per_class, "confusion": {"labels": labels, "matrix": cm.tolist()}}


def head_report(y: np.ndarray, probs: np.ndarray, labels: list[str], thresholds: dict | None = None,
                pred: np.ndarray | None = None) -> dict:
    """Everything we report for one head from true indices and probabilities."""
    pred = probs.argmax(1) if pred is None else pred
    report = classification_metrics(y, pred, labels)
    if thresholds:
        report["at_thresholds"] = coverage_at_thresholds(y, probs, labels, thresholds)
    return report


def recall_lower_bound(hits: int, n: int, confidence: float) -> float:
    """One-sided Wilson lower confidence bound of a recall of ``hits`` out of ``n``."""
    from scipy.stats import norm

    if n == 0:
        return 0.0
    if confidence <= 0.5:
        return hits / n
    z = float(norm.ppf(confidence))
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n))


def threshold_floor(rules, normalized_texts: list[str], rules_in_threshold: bool) -> np.ndarray:
    """The rows the same_day threshold may count as caught without the model: those the
    rules raise to same_day when the rules are counted, none otherwise."""
    if not rules_in_threshold:
        return np.zeros(len(normalized_texts), dtype=bool)
    return np.array([any(h.level == "same_day" for h in rules.match(t)) for t in normalized_texts], dtype=bool)


def urgency_decision_threshold(y: np.ndarray, probs: np.ndarray, labels: list[str], floor: np.ndarray,
                               target_recall: float, confidence: float = 0.5, copies: int = 1) -> float:
    """Largest P(same_day) threshold whose same_day recall (with the rule floor) meets the target.

    ``floor`` marks rows the rules already raise to same_day; training passes an empty
    floor unless told the rules were not written from this data (their coverage of the
    rows they were written from overstates their coverage of new tickets). Chosen on
    out-of-fold predictions of the training data, never on a test split. With
    ``confidence`` above 0.5 the target must hold for the one-sided lower confidence
    bound of the recall, not just its point estimate: out-of-fold recall is itself an
    estimate, and a threshold that only just reaches the target on it misses it on new
    data about half the time (training's default is the point estimate, with the rules
    as the margin). With too few positives for the bound to reach the target while
    allowing a single miss, the point estimate is used: otherwise a small training set
    would push the threshold to the floor and call nearly everything same_day. ``copies``
    says how many times each row occurs (out-of-fold scores pooled over repeated
    cross-validations): the confidence bound counts every row once.
    """
    sd = labels.index("same_day")
    positives = y == sd
    n_pos = int(positives.sum())
    if not n_pos:
        return 0.5
    if recall_lower_bound((n_pos - copies) / copies, n_pos / copies, confidence) < target_recall:
        confidence = 0.5
    p = probs[:, sd]
    base = (probs.argmax(1) == sd) | floor
    for t in np.unique(np.round(p[positives], 6))[::-1]:
        hits = int(((base | (p >= t)) & positives).sum())
        if recall_lower_bound(hits / copies, n_pos / copies, confidence) >= target_recall:
            return float(min(t, 0.5))
    return 0.0


def softmax_t(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(logits / temperature, axis=1)


def report_markdown(report: dict, title: str = "Evaluation") -> str:
    """A human-readable rendering of a report made of head reports."""
    lines = [f"# {title}", ""]
    for key in ("data", "folds", "grouped_duplicates"):
        if key in report:
            lines.append(f"- {key}: {report[key]}")
    lines.append("")
    for head, rep in report["heads"].items():
        lines += [f"## {head}", "",
                  f"accuracy {rep['accuracy']}, macro-F1 {rep['macro_f1']}, n = {rep['n']}", ""]
        if "at_thresholds" in rep:
            cov = rep["at_thresholds"]
            lines += [f"coverage at target precision: {cov['coverage']:.3f} "
                      f"(precision there {cov['precision'] if cov['precision'] is None else round(cov['precision'], 3)})", ""]
        for name, extra in rep.get("baselines", {}).items():
            lines += [f"baseline {name}: accuracy {extra['accuracy']}, macro-F1 {extra['macro_f1']}", ""]
        lines += ["| label | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
        for label, m in rep["per_class"].items():
            lines.append(f"| {label} | {m['precision']} | {m['recall']} | {m['f1']} | {m['support']} |")
        labels = rep["confusion"]["labels"]
        lines += ["", "Confusion (rows: true, columns: predicted)", "",
                  "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for label, row in zip(labels, rep["confusion"]["matrix"]):
            lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
        lines.append("")
    return "\n".join(lines)


def evaluate_bundle(model_path, data, *, text_column: str = "text", heads: dict | None = None,
                    fmt: str | None = None, columns: list | None = None, batch_size: int = 512) -> dict:
    """Score labelled data with a bundle (rules and decisions included) and report per head.

    Labels the bundle does not know count as errors; rows unlabelled for a head are skipped.
    """
    from pathlib import Path

    from training.data import read_dataset
    from triage.model import load

    model = load(model_path)
    data = [data] if isinstance(data, (str, Path)) else data
    dataset = read_dataset([Path(p) for p in data], text_column=text_column, heads=heads, fmt=fmt, columns=columns)
    results = []
    for start in range(0, len(dataset), batch_size):
        results.extend(model.score_batch(dataset.texts[start:start + batch_size]))
    report: dict = {"model": model.model_version, "data": [str(p) for p in data], "data_sha256": dataset.sha256,
                    "heads": {}}
    for head, values in dataset.labels.items():
        if head not in model.heads:
            continue
        labels = list(model.heads[head].labels)
        extra = sorted({v for v in values if v is not None and v not in labels})
        all_labels = labels + extra
        index = {lb: i for i, lb in enumerate(all_labels)}
        rows = [i for i, v in enumerate(values) if v is not None]
        y = np.array([index[values[i]] for i in rows])
        pred = np.array([index[results[i].heads[head].label] for i in rows])
        probs = np.zeros((len(rows), len(all_labels)))
        for k, i in enumerate(rows):
            for lb, p in results[i].heads[head].top:
                probs[k, index[lb]] = p
        report["heads"][head] = head_report(y, probs, all_labels, pred=pred)
        needs_review = np.array([results[i].heads[head].needs_review for i in rows])
        auto = ~needs_review
        report["heads"][head]["at_thresholds"] = {
            "coverage": float(auto.mean()) if len(rows) else 0.0,
            "precision": float((pred[auto] == y[auto]).mean()) if auto.any() else None}
        if head == "urgency" and "same_day" in index:
            sd = index["same_day"]
            tp = int(((pred == sd) & (y == sd)).sum())
            called_auto = (pred == sd) & auto
            tp_auto = int((called_auto & (y == sd)).sum())
            report["same_day"] = {"recall": round(tp / max(1, int((y == sd).sum())), 4),
                                  "precision": round(tp / max(1, int((pred == sd).sum())), 4),
                                  "support": int((y == sd).sum()),
                                  "without_review": {"recall": round(tp_auto / max(1, int((y == sd).sum())), 4),
                                                     "precision": round(tp_auto / max(1, int(called_auto.sum())), 4),
                                                     "calls": int(called_auto.sum())},
                                  "calls_for_review": int(((pred == sd) & needs_review).sum())}
    if dataset.flags is not None:
        report["escalation"] = flag_report(dataset.flags, [list(r.escalation) for r in results])
    report["needs_review_rate"] = round(float(np.mean([r.needs_review for r in results])), 4)
    return report


def flag_report(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Precision, recall and support per escalation flag."""
    flags = sorted({f for g in gold for f in g} | {f for p in predicted for f in p})
    out = {}
    for flag in flags:
        g = np.array([flag in x for x in gold])
        p = np.array([flag in x for x in predicted])
        tp = int((g & p).sum())
        out[flag] = {"precision": round(tp / p.sum(), 4) if p.sum() else None,
                     "recall": round(tp / g.sum(), 4) if g.sum() else None, "support": int(g.sum())}
    return out
