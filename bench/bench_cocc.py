"""Retrain through the public CLI on COCC (real telecom work orders) and compare baselines.

    python bench/bench_cocc.py --out bench/results/cocc.json

Runs ``triage train`` on ``../shared/datasets/public/cocc_dev.tsv`` with 5-fold
stratified cross-validation (duplicate texts grouped into one fold), training fastText
and a plain scikit-learn char TF-IDF + LR pipeline on the same folds in the same run.
Exits 0 with a note when the public data is absent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COCC = ROOT.parent / "shared" / "datasets" / "public" / "cocc_dev.tsv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=COCC)
    parser.add_argument("--out", default="bench/results/cocc.json")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} is absent")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(Path(sys.executable).parent / "triage"), "train", "--data", str(args.data),
                   "--columns", "text,category", "--out", f"{tmp}/cocc", "--folds", "5",
                   "--baseline", "fasttext", "--baseline", "sklearn_char_lr", "--report", f"{tmp}/cv.md"]
        start = time.perf_counter()
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        report = json.loads(Path(f"{tmp}/cv.json").read_text("utf-8"))
    head = report["heads"]["category"]
    result = {
        "command": " ".join(["triage"] + command[1:]).replace(tmp, "TMP"),
        "data": str(args.data.name), "folds": report["folds"], "grouped_duplicates": report["grouped_duplicates"],
        "seconds": round(seconds, 1),
        "triage_linear": {"macro_f1": head["macro_f1"], "accuracy": head["accuracy"],
                          "coverage_at_target_precision": head["at_thresholds"]},
        "baselines": {name: {"macro_f1": b["macro_f1"], "accuracy": b["accuracy"]}
                      for name, b in head["baselines"].items()},
        "per_class": head["per_class"],
    }
    result["points_above_fasttext"] = round(100 * (head["macro_f1"] - head["baselines"]["fasttext"]["macro_f1"]), 2)
    result["target_macro_f1_0.90_met"] = head["macro_f1"] >= 0.90
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "per_class"}, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
