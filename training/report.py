"""``triage report``: a self-contained HTML report of a bundle on labelled data, and its JSON.

The metrics are ``evaluate_bundle``'s (the same numbers as ``triage eval``); this module
adds what needs the per-ticket predictions: calibration, precision–coverage curves, the
most confident mistakes and label distributions, and draws them with matplotlib (Agg,
object API, no pyplot) in a CJK font that a package ships, embedded as base64 PNG.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np

from triage.normalize import mask_pii

MISTAKES = 30
CALIBRATION_BINS = 10
CURVE_POINTS = 101
TEXT_CHARS = 300
TEMPLATE = "report_template.html"
FALLBACK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
                  "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei", "PingFang SC")


# -- fonts ---------------------------------------------------------------------------------
_FONT: dict | None = None


def find_cjk_font() -> dict:
    """Register a Chinese-capable font with matplotlib; return its name and path.

    Prefers Noto Sans SC from the ``pylopdf-fonts-zh-cn`` package, then an installed
    system font with one of FALLBACK_FONTS' names.
    """
    global _FONT
    if _FONT is not None:
        return _FONT
    from matplotlib import font_manager

    path = None
    try:
        import pylopdf_fonts_zh_cn

        path = str(pylopdf_fonts_zh_cn.sans_path())
        font_manager.fontManager.addfont(path)
    except ImportError:
        for entry in font_manager.fontManager.ttflist:
            if entry.name in FALLBACK_FONTS:
                path = entry.fname
                break
    if path is None:
        raise RuntimeError("no Chinese font for the report's charts: pip install pylopdf-fonts-zh-cn")
    name = font_manager.FontProperties(fname=path).get_name()
    _FONT = {"name": name, "path": path}
    return _FONT


def find_missing_glyphs(texts, font_path: str) -> list[str]:
    """Characters of ``texts`` that the font cannot draw (they would show as tofu boxes)."""
    from matplotlib.ft2font import FT2Font

    charmap = FT2Font(font_path).get_charmap()
    chars = {c for t in texts for c in t if not c.isspace()}
    return sorted(c for c in chars if ord(c) not in charmap)


def build_font_face(text: str, font_path: str, family: str = "TriageCJK") -> str:
    """An ``@font-face`` rule embedding the font, cut down to the characters of ``text``
    (plus printable ASCII) as base64 WOFF, so Chinese renders where no CJK font is installed."""
    from fontTools import subset

    options = subset.Options()
    options.flavor = "woff"
    options.layout_features = ["*"]
    font = subset.load_font(font_path, options)
    try:
        subsetter = subset.Subsetter(options)
        subsetter.populate(text="".join(sorted(set(text) | {chr(c) for c in range(32, 127)})))
        subsetter.subset(font)
        buf = io.BytesIO()
        subset.save_font(font, buf, options)
    finally:
        font.close()
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'@font-face {{ font-family: "{family}"; src: url(data:font/woff;base64,{data}) format("woff"); }}'


def _rc(font: dict) -> dict:
    return {"font.family": [font["name"], "DejaVu Sans"], "font.size": 10, "axes.titlesize": 11,
            "svg.fonttype": "path", "figure.dpi": 100}


def encode_png(fig) -> str:
    """A figure as a ``data:image/png;base64,…`` URI, drawn by the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# -- numbers -------------------------------------------------------------------------------
def compute_reliability(confidence, correct, n_bins: int = CALIBRATION_BINS) -> dict:
    """Equal-width confidence bins: count, mean confidence and accuracy; and the ECE.

    A confidence of exactly 1.0 falls in the last bin.
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = which == b
        n = int(m.sum())
        entry = {"lo": round(float(edges[b]), 4), "hi": round(float(edges[b + 1]), 4), "n": n,
                 "confidence": None, "accuracy": None}
        if n:
            c, a = float(conf[m].mean()), float(ok[m].mean())
            entry["confidence"], entry["accuracy"] = round(c, 4), round(a, 4)
            ece += n * abs(a - c)
        bins.append(entry)
    return {"bins": bins, "ece": round(ece / len(conf), 4) if len(conf) else None}


def compute_precision_coverage(confidence, correct, max_points: int = CURVE_POINTS) -> dict:
    """Precision of the predictions kept at each confidence threshold, against the share kept.

    One point per distinct confidence (ties are kept or dropped together), from the
    highest threshold down; thinned to at most ``max_points`` points, keeping both ends.
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    if not len(conf):
        return {"threshold": [], "coverage": [], "precision": []}
    order = np.argsort(-conf, kind="stable")
    c, k = conf[order], ok[order]
    kept = np.arange(1, len(c) + 1)
    precision = np.cumsum(k) / kept
    last = np.nonzero(np.append(c[1:] != c[:-1], True))[0]
    if len(last) > max_points:
        last = last[np.unique(np.linspace(0, len(last) - 1, max_points).round().astype(int))]
    return {"threshold": [round(float(v), 4) for v in c[last]],
            "coverage": [round(float(v), 4) for v in kept[last] / len(c)],
            "precision": [round(float(v), 4) for v in precision[last]]}


def measure_at_threshold(confidence, correct, threshold: float) -> dict:
    """Coverage and precision of the predictions whose confidence reaches ``threshold``."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    keep = conf >= threshold
    return {"threshold": round(float(threshold), 4),
            "coverage": round(float(keep.mean()), 4) if len(conf) else 0.0,
            "precision": round(float(ok[keep].mean()), 4) if keep.any() else None}


def compute_class_curves(pred: list[str], confidence, correct, labels: list[str], thresholds: dict) -> dict:
    """Per predicted class: its precision–coverage curve and the point at its threshold."""
    pred_arr = np.array(pred, dtype=object)
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    out = {}
    for label in labels:
        m = pred_arr == label
        if not m.any():
            continue
        t = float(thresholds.get(label, 0.0))
        out[label] = {"n": int(m.sum()), "curve": compute_precision_coverage(conf[m], ok[m]),
                      "at_threshold": measure_at_threshold(conf[m], ok[m], t)}
    return out


def find_top_mistakes(texts: list[str], gold: list, pred: list[str], confidence, limit: int = MISTAKES,
                 top: list | None = None) -> list[dict]:
    """The ``limit`` wrong predictions with the highest confidence, texts PII-masked."""
    conf = np.asarray(confidence, dtype=float)
    rows = [i for i, (g, p) in enumerate(zip(gold, pred)) if g is not None and g != p]
    rows.sort(key=lambda i: (-conf[i], i))
    out = []
    for i in rows[:limit]:
        text = mask_pii(texts[i])
        entry = {"row": i + 1, "true": gold[i], "predicted": pred[i], "confidence": round(float(conf[i]), 4),
                 "text": text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + "…"}
        if top is not None:
            entry["top"] = [{"label": lb, "probability": round(float(p), 4)} for lb, p in top[i]]
        out.append(entry)
    return out


def count_labels(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))


def build_model_card(manifest: dict) -> dict:
    """The model card as data: what the bundle was trained on, when, how, and its CV metrics."""
    from triage.cli import format_model_card

    training = manifest.get("training", {})
    cv = manifest.get("metrics", {}).get("cv", {})
    heads = {}
    for head, spec in manifest["heads"].items():
        rep = cv.get("heads", {}).get(head, {})
        heads[head] = {"labels": spec["labels"], "thresholds": spec.get("thresholds", {}),
                       "decision": spec.get("decision", {}), "temperature": spec.get("temperature"),
                       "cv": {"accuracy": rep.get("accuracy"), "macro_f1": rep.get("macro_f1"),
                              "at_thresholds": rep.get("at_thresholds"),
                              "per_class": rep.get("per_class", {})}}
    return {"model_version": manifest["model_version"], "created_at": manifest.get("created_at"),
            "tier": manifest.get("tier", "linear"),
            "training": {k: training.get(k) for k in ("sources", "data_sha256", "n_rows", "label_counts", "config")},
            "features": {k: v for k, v in manifest["features"].items() if k in ("config", "n_features")},
            "cv_folds": cv.get("folds"), "heads": heads,
            "library_versions": manifest.get("library_versions", {}), "text": format_model_card(manifest)}


# -- building ------------------------------------------------------------------------------
def score_texts(model, texts: list[str], batch_size: int = 512) -> list:
    results = []
    for start in range(0, len(texts), batch_size):
        results.extend(model.score_batch(texts[start:start + batch_size]))
    return results


def build_report(model_path, data, *, text_column: str = "text", heads: dict | None = None,
                 fmt: str | None = None, columns: list | None = None, mistakes: int = MISTAKES,
                 taxonomy=None) -> dict:
    """The report's numbers as a JSON-ready dict (metrics from ``evaluate_bundle``)."""
    from training.data import read_dataset
    from training.evaluate import evaluate_bundle
    from triage.model import load
    from triage.taxonomy import load_taxonomy

    data = [data] if isinstance(data, (str, Path)) else list(data)
    evaluation = evaluate_bundle(model_path, data, text_column=text_column, heads=heads, fmt=fmt, columns=columns)
    dataset = read_dataset([Path(p) for p in data], text_column=text_column, heads=heads, fmt=fmt, columns=columns)
    model = load(model_path)
    taxonomy = taxonomy or load_taxonomy()
    results = score_texts(model, dataset.texts)
    training_counts = model.manifest.get("training", {}).get("label_counts", {})
    out_heads = {}
    for head, spec in model.manifest["heads"].items():
        labels = list(spec["labels"])
        thresholds = spec.get("thresholds", {})
        pred = [r.heads[head].label for r in results]
        conf = np.array([r.heads[head].confidence for r in results])
        gold = dataset.labels.get(head)
        section = {"labels": labels, "thresholds": thresholds,
                   "display_names": {lb: taxonomy.display_name(head, lb)
                                     for lb in labels + sorted(set(count_labels(gold or [])) - set(labels))},
                   "distribution": {"training": training_counts.get(head, {}), "predicted": count_labels(pred)}}
        if gold is not None:
            rows = [i for i, g in enumerate(gold) if g is not None]
            correct = np.array([gold[i] == pred[i] for i in rows], dtype=bool)
            section["metrics"] = evaluation["heads"].get(head)
            section["distribution"]["data"] = count_labels(gold)
            section["calibration"] = compute_reliability(conf[rows], correct)
            section["precision_coverage"] = {
                "overall": compute_precision_coverage(conf[rows], correct),
                "at_thresholds": (evaluation["heads"].get(head) or {}).get("at_thresholds"),
                "per_class": compute_class_curves([pred[i] for i in rows], conf[rows], correct, labels, thresholds)}
            section["mistakes"] = find_top_mistakes(dataset.texts, gold, pred, conf, mistakes,
                                               top=[r.heads[head].top for r in results])
        out_heads[head] = section
    report = {"model": model.model_version, "model_path": str(model_path), "data": [str(p) for p in data],
              "data_sha256": dataset.sha256, "n": len(dataset),
              "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "model_card": build_model_card(model.manifest), "heads": out_heads,
              "needs_review_rate": evaluation.get("needs_review_rate")}
    if "same_day" in evaluation:
        sd = dict(evaluation["same_day"])
        sd["target_recall"] = model.manifest.get("training", {}).get("config", {}).get("same_day_recall")
        gold = dataset.labels.get("urgency") or []
        missed = [i for i, g in enumerate(gold) if g == "same_day" and results[i].heads["urgency"].label != "same_day"]
        sd["missed"] = [{"row": i + 1, "predicted": results[i].heads["urgency"].label,
                         "text": mask_pii(dataset.texts[i])[:TEXT_CHARS]} for i in missed[:mistakes]]
        report["same_day"] = sd
    if "escalation" in evaluation:
        report["escalation"] = evaluation["escalation"]
    return report


# -- charts --------------------------------------------------------------------------------
def _names(section: dict, labels: list[str]) -> list[str]:
    return [section["display_names"].get(lb, lb) for lb in labels]


def plot_confusion(section: dict, font: dict, title: str) -> str:
    """Heat map of the confusion matrix, coloured by row share (recall), annotated with counts."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    conf = section["metrics"]["confusion"]
    labels, cm = conf["labels"], np.array(conf["matrix"], dtype=float)
    names = _names(section, labels)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = max(4.6, 0.5 * len(labels) + 2.4)
    with rc_context(_rc(font)):
        fig = Figure(figsize=(side + 0.8, side))
        ax = fig.add_subplot()
        im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), names, rotation=40, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(len(labels)), names)
        ax.set_xlabel("预测 (predicted)")
        ax.set_ylabel("真实 (true)")
        ax.set_title(title)
        size = 9 if len(labels) <= 8 else 7.5
        for i in range(len(labels)):
            for j in range(len(labels)):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=size,
                            color="white" if share[i, j] > 0.55 else "#1f2933")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="行占比 (recall)")
        fig.tight_layout()
        return encode_png(fig)


def plot_reliability(section: dict, font: dict, title: str) -> str:
    """Reliability diagram: accuracy per confidence bin against the diagonal, counts below."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    cal = section["calibration"]
    bins = cal["bins"]
    width = bins[0]["hi"] - bins[0]["lo"]
    lo = np.array([b["lo"] for b in bins])
    acc = np.array([b["accuracy"] if b["accuracy"] is not None else np.nan for b in bins])
    mean_conf = np.array([b["confidence"] if b["confidence"] is not None else np.nan for b in bins])
    counts = np.array([b["n"] for b in bins])
    with rc_context(_rc(font)):
        fig = Figure(figsize=(4.8, 4.8))
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        top.plot([0, 1], [0, 1], ls="--", color="#9aa5b1", lw=1, label="完美校准 (perfect)")
        has = ~np.isnan(acc)
        top.bar(lo[has], acc[has], width=width, align="edge", color="#4c78a8", edgecolor="white",
                label="准确率 (accuracy)")
        top.plot(mean_conf[has], acc[has], "o", color="#e45756", ms=4, label="平均置信度 (mean confidence)")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1.02)
        top.set_ylabel("准确率 (accuracy)")
        top.set_title(f"{title} — ECE {cal['ece']}")
        top.legend(loc="upper left", fontsize=8, frameon=False)
        bottom.bar(lo, counts, width=width, align="edge", color="#9aa5b1", edgecolor="white")
        bottom.set_xlabel("置信度 (confidence)")
        bottom.set_ylabel("工单数")
        fig.tight_layout()
        return encode_png(fig)


def plot_precision_coverage(section: dict, font: dict, title: str) -> str:
    """Left: precision against coverage for one global threshold, with the bundle's operating
    point; right: the same per predicted class, each with its chosen threshold marked."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    import matplotlib

    pc = section["precision_coverage"]
    with rc_context(_rc(font)):
        fig = Figure(figsize=(10.5, 4.4))
        left, right = fig.subplots(1, 2, sharey=True)
        curve = pc["overall"]
        left.plot(curve["coverage"], curve["precision"], color="#1f2933", lw=2, label="全局阈值 (one threshold)")
        op = pc.get("at_thresholds") or {}
        if op.get("precision") is not None:
            left.plot([op["coverage"]], [op["precision"]], marker="*", ms=15, color="#e45756", ls="none",
                      label=f"分类阈值 (per-class thresholds): "
                            f"覆盖 {op['coverage']:.2f}, 精确 {op['precision']:.2f}")
        left.set_title(f"{title} — 全部 (all)")
        left.set_xlabel("覆盖率 (coverage: share auto-routed)")
        left.set_ylabel("精确率 (precision)")
        left.legend(loc="lower left", fontsize=8, frameon=False)
        n_classes = len(pc["per_class"])
        colors = [f"C{k}" for k in range(10)] if n_classes <= 10 else \
            [matplotlib.colormaps["tab20"](k % 20) for k in range(n_classes)]
        for k, (label, entry) in enumerate(sorted(pc["per_class"].items(), key=lambda kv: -kv[1]["n"])):
            color = colors[k % len(colors)]
            name = section["display_names"].get(label, label)
            c = entry["curve"]
            at = entry["at_threshold"]
            right.plot(c["coverage"], c["precision"], color=color, lw=1.3,
                       label=f"{name} (t={at['threshold']:.2f}, n={entry['n']})")
            if at["precision"] is not None:
                right.plot([at["coverage"]], [at["precision"]], marker="o", ms=7, color=color,
                           markeredgecolor="black", ls="none")
        right.set_title("按预测类别 (per predicted class; ● = threshold)")
        right.set_xlabel("类内覆盖率 (coverage within class)")
        right.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
        lows = [min(c["precision"]) for c in [curve] + [e["curve"] for e in pc["per_class"].values()] if c["precision"]]
        bottom = max(0.0, np.floor((min(lows, default=0.0) - 0.05) * 10) / 10)
        for ax in (left, right):
            ax.set_xlim(0, 1.02)
            ax.set_ylim(bottom, 1.0 + (1.0 - bottom) * 0.04)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        return encode_png(fig)


def plot_distribution(section: dict, font: dict, title: str) -> str:
    """Label shares: training data (manifest), this data's labels and the model's predictions."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    dist = section["distribution"]
    series = [("训练集 (training)", dist.get("training") or {}, "#9aa5b1"),
              ("本数据标注 (data labels)", dist.get("data") or {}, "#4c78a8"),
              ("模型预测 (predicted)", dist.get("predicted") or {}, "#f58518")]
    series = [s for s in series if s[1]]
    labels = list(section["labels"]) + sorted({lb for _, c, _ in series for lb in c} - set(section["labels"]))
    names = _names(section, labels)
    height = max(2.6, 0.42 * len(labels) * max(1, len(series)) / 2 + 1.2)
    with rc_context(_rc(font)):
        fig = Figure(figsize=(5.6, height))
        ax = fig.add_subplot()
        bar = 0.8 / len(series)
        y = np.arange(len(labels))
        for k, (name, counts, color) in enumerate(series):
            total = max(1, sum(counts.values()))
            ax.barh(y + k * bar - 0.4 + bar / 2, [counts.get(lb, 0) / total for lb in labels], height=bar,
                    color=color, label=name)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("占比 (share)")
        ax.set_title(title)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.55 / (0.8 * height)), ncol=len(series), fontsize=8,
                  frameon=False)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        return encode_png(fig)


# -- HTML ----------------------------------------------------------------------------------
def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _label(section: dict, code: str) -> str:
    name = section["display_names"].get(code, code)
    return _e(name) if name == code else f"{_e(name)} <span class=\"note\">{_e(code)}</span>"


def _img(src: str, caption: str) -> str:
    return f'<figure><img src="{src}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _table(header: list[str], rows: list[list[str]], num_from: int = 1) -> str:
    head = "".join(f'<th class="{"num" if k >= num_from else ""}">{h}</th>' for k, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"num" if k >= num_from else ""}">{c}</td>'
                                    for k, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_same_day(report: dict) -> str:
    sd = report.get("same_day")
    if not sd:
        return ('<div class="callout"><div>当日处理 (same_day) 召回率: 本数据没有 urgency 标注，无法计算 '
                '(no urgency labels in this data)</div></div>')
    target = sd.get("target_recall")
    ok = target is None or sd["recall"] >= target
    missed = "".join(f"<tr><td class=\"num\">{m['row']}</td><td>{_e(m['predicted'])}</td>"
                     f"<td class=\"text\">{_e(m['text'])}</td></tr>" for m in sd.get("missed", []))
    details = (f"<details><summary>漏判的当日工单 (missed same_day tickets): {len(sd.get('missed', []))}</summary>"
               f"<table><thead><tr><th>行</th><th>预测</th><th>文本 (PII masked)</th></tr></thead>"
               f"<tbody>{missed}</tbody></table></details>") if missed else ""
    return (f'<div class="callout {"ok" if ok else "bad"}"><div class="big">{sd["recall"]:.3f}</div>'
            f"<div><b>当日处理 (same_day) 召回率 / recall</b><br>"
            f"precision {sd['precision']:.3f} · support {sd['support']}"
            + (f" · target recall {target}" if target is not None else "")
            + f"</div></div>{details}")


def render_summary(report: dict) -> str:
    card = report["model_card"]
    rows = []
    for head, section in report["heads"].items():
        m = section.get("metrics") or {}
        at = m.get("at_thresholds") or {}
        cv = card["heads"].get(head, {}).get("cv", {})
        rows.append([_e(head), _fmt(m.get("accuracy")), _fmt(m.get("macro_f1")), _fmt(at.get("coverage")),
                     _fmt(at.get("precision")), _fmt((section.get("calibration") or {}).get("ece")),
                     _fmt(cv.get("accuracy")), _fmt(cv.get("macro_f1")), _e(m.get("n", "–"))])
    return _table(["head", "accuracy", "macro-F1", "coverage at thresholds", "precision there", "ECE",
                   f"CV accuracy ({card['cv_folds']}-fold)", "CV macro-F1", "n"], rows)


def render_model_card(report: dict) -> str:
    card = report["model_card"]
    training = card["training"]
    counts = training.get("label_counts") or {}
    facts = [("model", _e(card["model_version"])), ("created", _e(card["created_at"])),
             ("training data", _e(", ".join(training.get("sources") or []))),
             ("data sha256", f"<code>{_e(training.get('data_sha256'))}</code>"), ("rows", _e(training.get("n_rows"))),
             ("cross-validation", f"{_e(card['cv_folds'])}-fold, out-of-fold (held-out) metrics")]
    blocks = [f"<pre>{_e(card['text'])}</pre>",
              "<table><tbody>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts) + "</tbody></table>"]
    tables = []
    for head, c in counts.items():
        section = report["heads"].get(head, {"display_names": {}})
        cv = card["heads"].get(head, {}).get("cv", {}).get("per_class", {})
        rows = [[_label(section, k), _e(v), _fmt((cv.get(k) or {}).get("f1"))] for k, v in c.items()]
        tables.append(f"<div><h3>{_e(head)}: 训练标签 (training labels)</h3>"
                      + _table(["label", "count", "CV F1"], rows) + "</div>")
    blocks.append('<div class="figs">' + "".join(tables) + "</div>")
    blocks.append("<details><summary>训练设置 (training settings)</summary><pre>"
                  + _e(json.dumps(training.get("config"), ensure_ascii=False, indent=1)) + "</pre></details>")
    blocks.append("<details><summary>阈值与库版本 (thresholds, library versions)</summary><pre>"
                  + _e(json.dumps({"thresholds": {h: v["thresholds"] for h, v in card["heads"].items()},
                                   "decision": {h: v["decision"] for h, v in card["heads"].items() if v["decision"]},
                                   "library_versions": card["library_versions"]}, ensure_ascii=False, indent=1))
                  + "</pre></details>")
    return "".join(blocks)


def render_head(head: str, section: dict, font: dict) -> str:
    parts = [f'<h2 id="head-{_e(head)}">{_e(head)}</h2>']
    if "metrics" not in section:
        parts.append('<p class="note">本数据没有此项标注 (no labels for this head in the data): '
                     'only the predicted distribution is shown.</p>')
        parts.append('<div class="figs">' + _img(plot_distribution(section, font, f"{head}: 标签分布"),
                                                   "label distribution") + "</div>")
        return "".join(parts)
    m = section["metrics"]
    rows = []
    for label, pc in m["per_class"].items():
        low = ' class="low"' if pc["support"] and pc["recall"] < 0.5 else ""
        rows.append([_label(section, label), _fmt(pc["precision"]), f"<span{low}>{_fmt(pc['recall'])}</span>",
                     _fmt(pc["f1"]), _e(pc["support"]), _fmt(section["thresholds"].get(label))])
    parts.append(f"<p>accuracy <b>{_fmt(m['accuracy'])}</b> · macro-F1 <b>{_fmt(m['macro_f1'])}</b> · "
                 f"n {m['n']} · ECE {_fmt(section['calibration']['ece'])}</p>")
    parts.append('<div class="figs">'
                 + _img(plot_confusion(section, font, f"{head}: 混淆矩阵 (confusion)"),
                        "confusion matrix: rows true, columns predicted; colour = share of the row")
                 + "<div>" + _table(["label", "precision", "recall", "F1", "support", "threshold"], rows)
                 + "</div></div>")
    parts.append('<div class="figs">'
                 + _img(plot_reliability(section, font, f"{head}: 校准"), "reliability diagram")
                 + _img(plot_distribution(section, font, f"{head}: 标签分布"), "label distribution")
                 + "</div>")
    parts.append('<div class="figs">' + _img(plot_precision_coverage(section, font, head),
                                               "precision–coverage; markers: the bundle's thresholds") + "</div>")
    mistakes = section.get("mistakes", [])
    rows = [[_e(x["row"]), _label(section, x["true"]), _label(section, x["predicted"]), _fmt(x["confidence"]),
             f'<span class="text">{_e(x["text"])}</span>'] for x in mistakes]
    parts.append(f"<h3>最自信的错误 (most confident mistakes): {len(mistakes)}</h3>"
                 + (_table(["row", "true", "predicted", "confidence", "text (PII masked)"], rows, num_from=99)
                    if rows else '<p class="note">none</p>'))
    return "".join(parts)


def render_html(report: dict) -> str:
    """The report as one self-contained HTML page (charts embedded, no external resources)."""
    font = find_cjk_font()
    title = f"Triage model report — {report['model']}"
    toc = " · ".join(f'<a href="#head-{_e(h)}">{_e(h)}</a>' for h in report["heads"])
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="meta">data: {_e(", ".join(report["data"]))} · {report["n"]} tickets · '
            f'sha256 <code>{_e(report["data_sha256"][:16])}</code> · generated {_e(report["generated_at"])} · '
            f"needs review {_fmt(report.get('needs_review_rate'))}</p>",
            render_same_day(report), "<h2>概览 (summary)</h2>", render_summary(report), f"<p>{toc}</p>"]
    for head, section in report["heads"].items():
        body.append(render_head(head, section, font))
    if report.get("escalation"):
        rows = [[_e(f), _fmt(v["precision"]), _fmt(v["recall"]), _e(v["support"])]
                for f, v in report["escalation"].items()]
        body.append("<h2>升级标记 (escalation flags)</h2>" + _table(["flag", "precision", "recall", "support"], rows))
    body.append("<h2>模型卡 (model card)</h2>" + render_model_card(report))
    page = "\n".join(body)
    title_text = _e(title)
    visible = _strip_data_uris(page)
    template = Template(resources.files("training").joinpath(TEMPLATE).read_text("utf-8"))
    return template.substitute(title=title_text, body=page,
                               font_face=build_font_face(title_text + html.unescape(visible), font["path"]))


def _strip_data_uris(page: str) -> str:
    """The page without its embedded images (their base64 text needs no glyphs)."""
    import re

    return re.sub(r'"data:[^"]*"', '""', page)


def collect_chart_texts(report: dict) -> list[str]:
    """Every label name the charts draw (to check the font covers them)."""
    return [name for s in report["heads"].values() for name in s["display_names"].values()]


def write_report(model_path, data, out_dir, **kwargs) -> dict:
    """Write ``report.html`` and ``report.json`` into ``out_dir``; return the report."""
    report = build_report(model_path, data, **kwargs)
    font = find_cjk_font()
    report["font"] = {"name": font["name"],
                      "missing_glyphs": find_missing_glyphs(collect_chart_texts(report), font["path"])}
    page = render_html(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), "utf-8")
    (out / "report.html").write_text(page, "utf-8")
    return report
