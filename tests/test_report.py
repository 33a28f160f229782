"""``triage report``: its numbers against hand-computed cases and a tiny bundle, and its HTML
in headless Chromium (every chart loaded, the embedded Chinese font in use)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="triage report needs matplotlib (see pyproject)")
pytest.importorskip("pylopdf_fonts_zh_cn", reason="triage report needs the pylopdf-fonts-zh-cn CJK font")

from training.report import (compute_precision_coverage, compute_reliability, find_missing_glyphs,  # noqa: E402
                             find_top_mistakes, measure_at_threshold)
from tests.bundles import TINY_FIXTURE, read_tiny_rows as read_rows, train_tiny  # noqa: E402

FIXTURE = TINY_FIXTURE
PHONE = "13812345678"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("report") / "bundle")


@pytest.fixture(scope="module")
def written(tiny_bundle, tmp_path_factory):
    """Run ``triage report`` once; the output directory and its JSON."""
    from triage.cli import main

    out = tmp_path_factory.mktemp("report-out")
    assert main(["report", "--model", str(tiny_bundle), "--data", str(FIXTURE), "--out", str(out)]) == 0
    return out, json.loads((out / "report.json").read_text("utf-8"))


# -- hand-computed cases -------------------------------------------------------------------
def test_reliability_bins_by_hand():
    cal = compute_reliability([0.05, 0.15, 0.95, 0.95, 1.0], [False, True, True, False, True])
    bins = {b["lo"]: b for b in cal["bins"] if b["n"]}
    assert sorted(bins) == [0.0, 0.1, 0.9]
    assert bins[0.0] == {"lo": 0.0, "hi": 0.1, "n": 1, "confidence": 0.05, "accuracy": 0.0}
    assert bins[0.1]["accuracy"] == 1.0
    assert bins[0.9]["n"] == 3  # 1.0 belongs to the last bin
    assert bins[0.9]["confidence"] == pytest.approx(2.9 / 3, abs=1e-4)
    assert bins[0.9]["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    # (1·|0 − .05| + 1·|1 − .15| + 3·|2/3 − 2.9/3|) / 5
    assert cal["ece"] == pytest.approx((0.05 + 0.85 + 0.9) / 5, abs=1e-4)


def test_precision_coverage_by_hand():
    conf, ok = [0.9, 0.8, 0.8, 0.6], [True, False, True, False]
    curve = compute_precision_coverage(conf, ok)
    assert curve["threshold"] == [0.9, 0.8, 0.6]
    assert curve["coverage"] == [0.25, 0.75, 1.0]
    assert curve["precision"] == [1.0, 0.6667, 0.5]
    assert measure_at_threshold(conf, ok, 0.8) == {"threshold": 0.8, "coverage": 0.75, "precision": 0.6667}
    assert measure_at_threshold(conf, ok, 0.95)["precision"] is None


def test_precision_coverage_thins_long_curves():
    conf = [k / 1000 for k in range(1000)]
    curve = compute_precision_coverage(conf, [True] * 1000, max_points=50)
    assert len(curve["coverage"]) <= 50
    assert curve["coverage"][0] == 0.001 and curve["coverage"][-1] == 1.0


def test_top_mistakes_ranks_by_confidence_and_masks_pii():
    texts = ["甲", f"乙 电话{PHONE}", "丙", "丁"]
    gold, pred, conf = ["a", "a", "b", None], ["a", "b", "a", "b"], [0.99, 0.6, 0.8, 0.99]
    out = find_top_mistakes(texts, gold, pred, conf, limit=5)
    assert [m["row"] for m in out] == [3, 2]  # row 1 is right, row 4 unlabelled
    assert out[1]["text"] == "乙 电话<mobile>"
    assert [m["row"] for m in find_top_mistakes(texts, gold, pred, conf, limit=1)] == [3]


def test_font_draws_every_taxonomy_name():
    from training.report import find_cjk_font
    from triage.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    names = [taxonomy.display_name(h, lb) for h in taxonomy.heads for lb in taxonomy.labels(h)]
    assert find_missing_glyphs(names, find_cjk_font()["path"]) == []


# -- the tiny bundle -----------------------------------------------------------------------
@pytest.mark.slow
def test_confusion_counts_match_a_recount(tiny_bundle, written):
    from triage.model import load

    _, report = written
    rows = read_rows()
    results = load(tiny_bundle).score_batch([r["text"] for r in rows])
    for head in ("category", "department", "urgency", "sentiment"):
        conf = report["heads"][head]["metrics"]["confusion"]
        index = {lb: i for i, lb in enumerate(conf["labels"])}
        pairs = Counter((r[head], res.heads[head].label) for r, res in zip(rows, results))
        expected = [[pairs.get((a, b), 0) for b in conf["labels"]] for a in conf["labels"]]
        assert conf["matrix"] == expected
        assert sum(map(sum, conf["matrix"])) == 60
        # row sums are the fixture's label counts
        assert {lb: sum(conf["matrix"][index[lb]]) for lb in conf["labels"]} == Counter(r[head] for r in rows)
    same_day = [(r["urgency"], res.heads["urgency"].label) for r, res in zip(rows, results)]
    hits = sum(1 for g, p in same_day if g == p == "same_day")
    assert report["same_day"]["support"] == 12
    assert report["same_day"]["recall"] == round(hits / 12, 4)
    auto = [(r["urgency"], res.heads["urgency"].label) for r, res in zip(rows, results)
            if not res.heads["urgency"].needs_review]
    auto_hits = sum(1 for g, p in auto if g == p == "same_day")
    assert report["same_day"]["without_review"]["recall"] == round(auto_hits / 12, 4)
    assert report["same_day"]["without_review"]["calls"] == sum(1 for _, p in auto if p == "same_day")
    assert report["same_day"]["calls_for_review"] == sum(
        1 for res in results if res.heads["urgency"].label == "same_day" and res.heads["urgency"].needs_review)


@pytest.mark.slow
def test_distributions_and_model_card(written):
    _, report = written
    cat = report["heads"]["category"]
    quarter = {"billing": 15, "delivery": 15, "network": 15, "service_attitude": 15}
    assert cat["distribution"]["data"] == quarter
    assert cat["distribution"]["training"] == quarter
    assert sum(cat["distribution"]["predicted"].values()) == 60
    assert report["heads"]["urgency"]["distribution"]["data"] == {"normal": 22, "same_day": 12, "within_24h": 26}
    assert cat["display_names"]["billing"] == "费用账单"
    assert report["heads"]["urgency"]["display_names"]["same_day"] == "当日处理"
    card = report["model_card"]
    digest = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert card["training"]["data_sha256"] == digest == report["data_sha256"]
    assert card["training"]["n_rows"] == 60 and card["cv_folds"] == 2
    assert card["training"]["config"]["features"]["max_features"] == 2000
    assert card["heads"]["category"]["cv"]["macro_f1"] is not None
    assert card["text"].startswith("model      tiny-")
    assert report["font"]["missing_glyphs"] == []


@pytest.mark.slow
def test_calibration_and_mistakes_are_consistent(written):
    _, report = written
    for head, section in report["heads"].items():
        metrics = section["metrics"]
        assert sum(b["n"] for b in section["calibration"]["bins"]) == metrics["n"]
        errors = metrics["n"] - round(metrics["accuracy"] * metrics["n"])
        mistakes = section["mistakes"]
        assert len(mistakes) == min(30, errors)
        assert all(m["true"] != m["predicted"] for m in mistakes)
        assert [m["confidence"] for m in mistakes] == sorted((m["confidence"] for m in mistakes), reverse=True)
        curve = section["precision_coverage"]["overall"]
        assert curve["coverage"][-1] == 1.0
        assert curve["precision"][-1] == pytest.approx(metrics["accuracy"], abs=1e-4)
        for label, entry in section["precision_coverage"]["per_class"].items():
            assert entry["at_threshold"]["threshold"] == round(section["thresholds"][label], 4)


@pytest.mark.slow
def test_html_is_self_contained_and_masks_pii(written):
    out, report = written
    page = (out / "report.html").read_text("utf-8")
    assert PHONE not in page and PHONE not in (out / "report.json").read_text("utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\((https?:)?//|@import""", page)
    srcs = re.findall(r'<img src="([^"]*)"', page)
    assert len(srcs) == 4 * 4  # confusion, calibration, distribution, precision–coverage per head
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "@font-face" in page and "data:font/woff;base64," in page
    assert "当日处理" in page and "费用账单" in page


@pytest.mark.slow
def test_html_renders_in_headless_chromium(written, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    out, _ = written
    probe = """<script>
window.addEventListener('load', function () {
  document.fonts.ready.then(function () {
    var out = document.createElement('pre'); out.id = 'render-check';
    out.textContent = JSON.stringify({
      widths: Array.from(document.images).map(function (i) { return i.complete ? i.naturalWidth : -1; }),
      font: document.fonts.check('16px TriageCJK', '费用账单当日处理')});
    document.body.appendChild(out);
  });
});
</script>"""
    page = tmp_path / "check.html"
    page.write_text((out / "report.html").read_text("utf-8").replace("</body>", probe + "</body>"), "utf-8")
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}", "--virtual-time-budget=10000"]
    dom = subprocess.run(args + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"no render check in the DOM (exit {dom.returncode}): {dom.stderr[-800:]}"
    check = json.loads(found.group(1))
    assert len(check["widths"]) == 16 and all(w > 0 for w in check["widths"]), check
    assert check["font"] is True
    shot = tmp_path / "report.png"
    subprocess.run(args + [f"--screenshot={shot}", "--window-size=1200,3000", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
