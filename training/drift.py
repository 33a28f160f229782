"""``triage drift``: does recent traffic still look like what the bundle was trained on?

Three signals per bundle and batch of recent tickets:

* label PSI per head: the recent label distribution (the bundle's predictions, logged
  predictions, or agents' feedback labels) against ``manifest["training"]["label_counts"]``;
* confidence PSI per head: the recent histogram of top-label confidence against a
  reference histogram — one scored from ``--reference`` data when given, else
  ``manifest["reference"]["confidence_hist"]`` (see ``summarize_reference``);
* new frequent terms: jieba words and character bigrams frequent in the recent texts but
  rare in the reference texts, or in the bundle's vocabulary (document frequencies are
  recovered from its IDF weights).

A PSI above the threshold (default 0.2) is an alert; the command then exits with 3.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

PSI_THRESHOLD = 0.2
PSI_EPS = 1e-4
CONF_EDGES = tuple(round(k / 10, 1) for k in range(11))
MIN_ROWS = 100
TOP_TERMS = 30
MIN_TERM_COUNT = 3
MIN_TERM_SHARE = 0.01
MIN_LIFT = 5.0
EXIT_DRIFT = 3


# -- statistics ----------------------------------------------------------------------------
def compute_psi(expected, actual, eps: float = PSI_EPS) -> float:
    """Population stability index of two count (or share) vectors over the same bins.

    ``sum((a - e) * ln(a / e))`` over bin shares, with shares below ``eps`` raised to
    ``eps`` so that an empty bin does not make it infinite.
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or not len(e):
        raise ValueError("PSI needs two vectors of the same non-zero length")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("PSI needs two non-empty distributions")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def compute_label_psi(reference: dict[str, int], recent: dict[str, int], eps: float = PSI_EPS) -> dict:
    """PSI of two label-count dicts, with both shares and each label's contribution."""
    labels = sorted(reference.keys() | recent.keys())
    e = np.array([reference.get(lb, 0) for lb in labels], dtype=float)
    a = np.array([recent.get(lb, 0) for lb in labels], dtype=float)
    es, as_ = np.maximum(e / e.sum(), eps), np.maximum(a / a.sum(), eps)
    parts = (as_ - es) * np.log(as_ / es)
    return {"psi": round(float(parts.sum()), 4),
            "reference": {lb: round(float(v / e.sum()), 4) for lb, v in zip(labels, e)},
            "recent": {lb: round(float(v / a.sum()), 4) for lb, v in zip(labels, a)},
            "contributions": {lb: round(float(p), 4) for lb, p in zip(labels, parts)},
            "unknown_labels": sorted(recent.keys() - reference.keys())}


def count_confidence_bins(confidence, edges=CONF_EDGES) -> list[int]:
    """Counts of confidences in ``edges``' bins (the last bin includes 1.0)."""
    return np.histogram(np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0), bins=np.asarray(edges))[0].tolist()


def summarize_reference(probs: dict[str, np.ndarray], labels: dict[str, list[str]]) -> dict:
    """What a bundle should store as ``manifest["reference"]`` for drift checks.

    ``probs`` are calibrated class probabilities per head on data the model did not fit
    (out-of-fold), ``labels`` the label order of their columns.
    """
    return {"source": "out_of_fold",
            "confidence_hist": {h: {"edges": list(CONF_EDGES), "counts": count_confidence_bins(p.max(1))}
                                for h, p in probs.items()},
            "predicted_counts": {h: dict(sorted(Counter(labels[h][k] for k in p.argmax(1)).items()))
                                 for h, p in probs.items()}}


# -- terms ---------------------------------------------------------------------------------
def _is_cjk(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf"


def is_term(s: str) -> bool:
    """Chinese characters or Latin letters only, with at least one Chinese character or 2+ letters."""
    if not s:
        return False
    cjk = sum(map(_is_cjk, s))
    latin = sum(c.isascii() and c.isalpha() for c in s)
    return cjk + latin == len(s) and (cjk > 0 or latin >= 2)


def count_term_documents(texts, tokenizer=None) -> dict[str, Counter]:
    """In how many texts each bigram of Chinese characters (and, with a tokenizer, each jieba
    word of two or more characters) occurs, on the models' view of the text."""
    from triage.normalize import feature_text, normalize_text

    bigrams, words = Counter(), Counter()
    for text in texts:
        ft = feature_text(normalize_text(text))
        bigrams.update({ft[i:i + 2] for i in range(len(ft) - 1) if _is_cjk(ft[i]) and _is_cjk(ft[i + 1])})
        if tokenizer is not None:
            words.update({w for w in tokenizer.cut(ft) if len(w) >= 2 and is_term(w)})
    out = {"bigram": bigrams}
    if tokenizer is not None:
        out["word"] = words
    return out


def count_vocabulary_documents(model) -> tuple[dict[str, dict[str, int]], int]:
    """Training document frequencies of the bundle's bigram and word features, from their IDF.

    The featurizer's IDF is ``ln((1 + n) / (1 + df)) + 1``, so ``df = (1 + n) / e^(idf − 1) − 1``.
    Terms below ``min_df`` or cut by ``max_features`` are absent: rare in training.
    """
    from triage.features import WORD_PREFIX

    n = int(model.manifest.get("training", {}).get("n_rows") or 0)
    config = model.featurizer.config
    idf = model.featurizer.idf
    out: dict[str, dict[str, int]] = {}
    if config.char_ngram_min <= 2 <= config.char_ngram_max:
        out["bigram"] = {}
    if config.words:
        out["word"] = {}
    for gram, i in model.featurizer.vocabulary.items():
        df = max(0, round((1 + n) / math.exp(idf[i] - 1.0) - 1))
        if gram.startswith(WORD_PREFIX):
            word = gram[len(WORD_PREFIX):]
            if "word" in out and " " not in word:
                out["word"][word] = df
        elif len(gram) == 2 and "bigram" in out:
            out["bigram"][gram] = df
    return out, n


def find_new_terms(recent: dict[str, Counter], n_recent: int, reference: dict[str, dict], n_reference: int, *,
              top: int = TOP_TERMS, min_count: int = MIN_TERM_COUNT, min_share: float = MIN_TERM_SHARE,
              min_lift: float = MIN_LIFT) -> dict[str, list[dict]]:
    """Per kind, terms in at least ``min_count`` and ``min_share`` of the recent texts whose
    share there is at least ``min_lift`` times their (smoothed) share in the reference."""
    out = {}
    for kind, counts in recent.items():
        if kind not in reference:
            continue
        ref = reference[kind]
        found = []
        for term, c in counts.items():
            share = c / n_recent
            if c < min_count or share < min_share:
                continue
            ref_c = ref.get(term, 0)
            lift = share / ((ref_c + 0.5) / (n_reference + 1))
            if lift >= min_lift:
                found.append({"term": term, "recent_count": c, "recent_share": round(share, 4),
                              "reference_count": ref_c, "lift": round(lift, 2)})
        found.sort(key=lambda t: (-t["recent_count"] * math.log(t["lift"]), t["term"]))
        out[kind] = found[:top]
    return out


# -- reading recent traffic ----------------------------------------------------------------
def read_rows(paths, fmt: str | None = None, columns: list | None = None) -> list[dict]:
    from training.data import iter_rows

    return [row for p in paths for row in iter_rows(Path(p), fmt, columns)]


def get_row_text(row: dict, text_column: str) -> str | None:
    text = row.get(text_column)
    if not isinstance(text, str) or not text.strip():
        text = row.get("text_masked")
    return text if isinstance(text, str) and text.strip() else None


def get_given_label(row: dict, head: str) -> tuple[str, float | None, str] | None:
    """A label the row already carries for ``head``: a logged prediction (``triage score`` /
    API result: ``{head: {"label", "confidence"}}``) or an agent's label from a feedback
    export (``{head: label, "feedback": {...}}``). Plain label columns are not predictions."""
    value = row.get(head)
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        conf = value.get("confidence")
        return value["label"], float(conf) if isinstance(conf, (int, float)) else None, "logged"
    if isinstance(value, str) and value and isinstance(row.get("feedback"), dict):
        return value, None, "feedback"
    return None


def collect_labels(model, rows: list[dict], text_column: str = "text", rescore: bool = False,
                   batch_size: int = 512) -> dict:
    """Per head: the recent labels, confidences (where known) and where each came from."""
    heads = list(model.heads)
    given = [{h: (None if rescore else get_given_label(r, h)) for h in heads} for r in rows]
    need = [i for i, g in enumerate(given) if any(v is None for v in g.values()) and get_row_text(rows[i], text_column)]
    scored = {}
    for start in range(0, len(need), batch_size):
        chunk = need[start:start + batch_size]
        results = model.score_batch([get_row_text(rows[i], text_column) for i in chunk], errors="return")
        scored.update({i: r for i, r in zip(chunk, results) if not isinstance(r, Exception)})
    out = {h: {"labels": [], "confidence": [], "sources": Counter()} for h in heads}
    for i, g in enumerate(given):
        for h in heads:
            value = g[h]
            if value is None and i in scored:
                pred = scored[i].heads[h]
                value = (pred.label, pred.confidence, "scored")
            if value is None:
                out[h]["sources"]["unusable"] += 1
                continue
            out[h]["labels"].append(value[0])
            if value[1] is not None:
                out[h]["confidence"].append(value[1])
            out[h]["sources"][value[2]] += 1
    return out


def count_model_versions(rows: list[dict]) -> dict[str, int]:
    """Which bundle versions produced logged predictions or the feedback's suggestions."""
    seen: Counter = Counter()
    for row in rows:
        if isinstance(row.get("model_version"), str):
            seen[row["model_version"]] += 1
        elif isinstance(row.get("feedback"), dict):
            versions = {v.get("model_version") for v in row["feedback"].values() if isinstance(v, dict)}
            seen.update(v for v in versions if v)
    return dict(seen.most_common())


# -- the check -----------------------------------------------------------------------------
def detect_drift(model_path, data, *, reference=None, psi_threshold: float = PSI_THRESHOLD,
                 text_column: str = "text", fmt: str | None = None, columns: list | None = None,
                 rescore: bool = False, top_terms: int = TOP_TERMS, min_term_count: int = MIN_TERM_COUNT) -> dict:
    """Compare recent tickets with the bundle's training distribution; see the module doc."""
    from triage.model import load
    from triage.tokenize import WordTokenizer, read_userdict

    model = load(model_path)
    manifest = model.manifest
    data = [data] if isinstance(data, (str, Path)) else list(data)
    rows = read_rows(data, fmt, columns)
    if not rows:
        raise ValueError(f"no rows in {', '.join(map(str, data))}")
    recent = collect_labels(model, rows, text_column, rescore)
    notes: list[str] = []
    stored = manifest.get("reference", {})
    ref_conf: dict = {h: v for h, v in stored.get("confidence_hist", {}).items()}
    ref_pred: dict = dict(stored.get("predicted_counts", {}))
    ref_texts: list[str] | None = None
    conf_source = "manifest" if ref_conf else None
    if reference:
        reference = [reference] if isinstance(reference, (str, Path)) else list(reference)
        ref_rows = read_rows(reference, fmt, columns)
        ref_texts = [t for t in (get_row_text(r, text_column) for r in ref_rows) if t]
        ref_labels = collect_labels(model, [{"text": t} for t in ref_texts], "text", rescore=True)
        # explicit reference data takes precedence over what the bundle stored
        ref_conf = {h: {"edges": list(CONF_EDGES), "counts": count_confidence_bins(v["confidence"])}
                    for h, v in ref_labels.items() if v["confidence"]}
        conf_source = "reference_file"
        ref_pred = {h: dict(Counter(v["labels"])) for h, v in ref_labels.items()}
    if not ref_conf:
        notes.append("no confidence reference: the bundle has no manifest['reference']['confidence_hist'] "
                     "and no --reference data was given, so confidence shift is not checked")
    training_counts = manifest.get("training", {}).get("label_counts", {})
    heads, alerts = {}, []
    for head, rec in recent.items():
        entry: dict = {"n": len(rec["labels"]), "sources": dict(rec["sources"])}
        counts = dict(Counter(rec["labels"]))
        if counts and training_counts.get(head):
            entry["labels"] = compute_label_psi(training_counts[head], counts)
            if entry["labels"]["psi"] > psi_threshold:
                alerts.append({"kind": "labels", "head": head, "psi": entry["labels"]["psi"]})
        elif counts:
            entry["labels"] = {"skipped": "the manifest has no training label counts for this head"}
        if counts and ref_pred.get(head):
            entry["labels_vs_reference_predictions"] = compute_label_psi(ref_pred[head], counts)
        ref = ref_conf.get(head)
        if ref and rec["confidence"]:
            edges = ref.get("edges", list(CONF_EDGES))
            hist = count_confidence_bins(rec["confidence"], edges)
            value = round(compute_psi(ref["counts"], hist), 4)
            entry["confidence"] = {"psi": value, "edges": edges, "reference": ref["counts"], "recent": hist,
                                   "recent_mean": round(float(np.mean(rec["confidence"])), 4),
                                   "reference_mean": _hist_mean(edges, ref["counts"])}
            if value > psi_threshold:
                alerts.append({"kind": "confidence", "head": head, "psi": value})
        elif ref:
            entry["confidence"] = {"skipped": "no confidences in the recent rows for this head"}
        heads[head] = entry
    texts = [t for t in (get_row_text(r, text_column) for r in rows) if t]
    terms: dict = {"n_recent_texts": len(texts)}
    if texts:
        words = bool(model.featurizer.config.words) or ref_texts is not None
        userdict = manifest["features"].get("userdict")
        tokenizer = None
        if words:
            tokenizer = WordTokenizer(read_userdict(model.path / userdict) if userdict else read_userdict())
        recent_terms = count_term_documents(texts, tokenizer)
        if ref_texts is not None:
            ref_counts, n_ref = count_term_documents(ref_texts, tokenizer), len(ref_texts)
            terms["reference"] = "reference_file"
        else:
            ref_counts, n_ref = count_vocabulary_documents(model)
            terms["reference"] = "bundle_vocabulary"
        terms["n_reference"] = n_ref
        if n_ref:
            terms.update(find_new_terms(recent_terms, len(texts), ref_counts, n_ref, top=top_terms,
                                   min_count=min_term_count))
    else:
        notes.append("the recent rows carry no text: no term analysis")
    n_min = min((h["n"] for h in heads.values()), default=0)
    if n_min < MIN_ROWS:
        notes.append(f"only {n_min} recent labels for some head: PSI is noisy below {MIN_ROWS} rows")
    return {"model": model.model_version, "model_path": str(model_path), "data": [str(p) for p in data],
            "n": len(rows), "psi_threshold": psi_threshold,
            "reference": {"confidence": conf_source, "files": [str(p) for p in reference] if reference else []},
            "model_versions_seen": count_model_versions(rows), "heads": heads, "terms": terms,
            "alerts": alerts, "alert": bool(alerts), "notes": notes}


def _hist_mean(edges, counts) -> float | None:
    mids = (np.asarray(edges[:-1], dtype=float) + np.asarray(edges[1:], dtype=float)) / 2
    total = float(np.sum(counts))
    return round(float(np.dot(mids, counts) / total), 4) if total else None


def format_drift(report: dict) -> str:
    """A readable summary of ``detect_drift``'s result."""
    status = "DRIFT" if report["alert"] else "ok"
    lines = [f"{status}: {report['model']} on {', '.join(report['data'])} ({report['n']} rows); "
             f"PSI threshold {report['psi_threshold']}", ""]
    lines.append(f"{'head':<12} {'n':>6} {'label PSI':>10} {'conf PSI':>9}  largest label shifts")
    for head, h in report["heads"].items():
        lab = h.get("labels", {})
        conf = h.get("confidence", {})
        shifts = sorted(lab.get("contributions", {}).items(), key=lambda kv: -kv[1])[:3]
        text = ", ".join(f"{lb} {lab['reference'][lb]:.2f}→{lab['recent'][lb]:.2f}" for lb, _ in shifts)
        lines.append(f"{head:<12} {h['n']:>6} {_num(lab.get('psi')):>10} {_num(conf.get('psi')):>9}  {text}")
    terms = report["terms"]
    for kind in ("word", "bigram"):
        if terms.get(kind):
            shown = ", ".join(f"{t['term']}({t['recent_count']})" for t in terms[kind][:15])
            lines.append(f"new {kind}s (vs {terms['reference']}): {shown}")
    for alert in report["alerts"]:
        lines.append(f"ALERT {alert['kind']} PSI {alert['psi']} > {report['psi_threshold']} on {alert['head']}")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _num(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def write_drift(report: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=1), "utf-8")
