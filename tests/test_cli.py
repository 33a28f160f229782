"""The ``triage`` command: JSON on stdout, errors on stderr with a non-zero status."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from triage.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_score_text_prints_one_json_result(small_bundle, capsys):
    assert main(["score", "--model", str(small_bundle), "--compact", "电梯困人了快来"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["urgency"]["label"] == "same_day"


def test_score_input_keeps_order_and_reports_bad_lines(small_bundle, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([json.dumps({"id": "1", "text": "停水了"}, ensure_ascii=False), "{broken",
                               json.dumps({"id": "3", "text": ""}), json.dumps({"id": "4", "text": "网速慢"},
                                                                             ensure_ascii=False)]), "utf-8")
    assert main(["score", "--model", str(small_bundle), "--input", str(path), "--batch-size", "2"]) == 1
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line.get("id") for line in lines] == ["1", None, "3", "4"]
    assert lines[1]["error"]["code"] == "bad_json" and lines[2]["error"]["code"] == "empty_text"
    assert "could not be scored" in captured.err


def test_info_prints_the_model_card(small_bundle, capsys):
    assert main(["info", str(small_bundle)]) == 0
    out = capsys.readouterr().out
    assert "small" in out and "macro-F1" in out and "category" in out
    assert "runtime    single tickets featurised by" in out


def test_info_says_when_the_compiled_featurizer_is_missing(small_bundle, capsys, monkeypatch):
    from triage import features

    monkeypatch.setattr(features, "_featurize", None)
    assert main(["info", str(small_bundle)]) == 0
    assert "the C extension was not built" in capsys.readouterr().out


def test_missing_model_is_an_error_on_stderr(tmp_path, capsys):
    assert main(["score", "--model", str(tmp_path / "none"), "停电"]) == 2
    assert "no model bundle" in capsys.readouterr().err


def test_eval_reports_same_day_recall(small_bundle, tmp_path, capsys):
    data = ROOT / "datasets" / "corpus" / "dev.jsonl"
    assert main(["eval", "--model", str(small_bundle), "--data", str(data), "--report",
                 str(tmp_path / "r.md")]) == 0
    out = capsys.readouterr().out
    assert "same_day: recall" in out
    report = json.loads((tmp_path / "r.json").read_text("utf-8"))
    assert set(report["heads"]) == {"category", "department", "urgency", "sentiment"}
    assert report["escalation"]["regulator"]["support"] > 0


def test_console_script_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "triage.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in ("score", "train", "eval", "info", "serve"):
        assert command in out
