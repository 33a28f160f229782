"""Training reads the user's own data and label sets and writes a servable bundle."""

import csv
import json

from pathlib import Path

import numpy as np
import pytest

from training.data import read_dataset
from training.evaluate import (choose_thresholds, fit_temperature, recall_lower_bound, softmax_t,
                               urgency_decision_threshold)
from training.train import TrainConfig, train
from triage.features import FeatureConfig
from triage.model import load

ROWS = [
    ("话费被多扣了二十元，要求退还", "费用", "高"), ("套餐资费和宣传的不一样", "费用", "中"),
    ("账单里有一笔不认识的扣费", "费用", "高"), ("这个月流量费怎么这么多", "费用", "中"),
    ("家里宽带断网了", "网络", "高"), ("手机信号很差，经常掉线", "网络", "中"),
    ("5G网速特别慢", "网络", "中"), ("地下室完全没有信号", "网络", "高"),
    ("营业员态度很差，爱理不理", "服务", "低"), ("客服挂我电话", "服务", "中"),
    ("装维师傅迟到两个小时还不道歉", "服务", "低"), ("热线一直打不通，没人接", "服务", "中"),
] * 4


def _write(path, fmt):
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps({"内容": t, "类别": a, "优先级": b}, ensure_ascii=False)
                                  for t, a, b in ROWS), "utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t" if fmt == "tsv" else ",")
            writer.writerow(["内容", "类别", "优先级"])
            writer.writerows(ROWS)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_read_dataset_reads_every_format_with_named_columns(tmp_path, fmt):
    data = read_dataset([_write(tmp_path / f"d.{fmt}", fmt)], text_column="内容",
                        heads={"topic": "类别", "priority": "优先级"})
    assert len(data) == len(ROWS)
    assert data.label_counts()["topic"] == {"费用": 16, "网络": 16, "服务": 16}


def test_read_dataset_errors_are_clear(tmp_path):
    path = _write(tmp_path / "d.csv", "csv")
    with pytest.raises(ValueError, match="no text column"):
        read_dataset([path])
    with pytest.raises(ValueError, match="no label columns"):
        read_dataset([path], text_column="内容")
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_dataset([tmp_path / "d.xlsx"])


@pytest.mark.slow
def test_a_bundle_trained_on_custom_labels_serves_those_labels(tmp_path):
    path = _write(tmp_path / "d.csv", "csv")
    config = TrainConfig(data=[str(path)], text_column="内容", heads={"topic": "类别", "priority": "优先级"},
                         folds=3, features=FeatureConfig(min_df=1, words=True))
    train(config, tmp_path / "bundle")
    model = load(tmp_path / "bundle")
    assert model.labels == {"topic": ["服务", "网络", "费用"], "priority": ["中", "低", "高"]}
    res = model.score("宽带又断网了，一直连不上").to_dict()
    assert res["topic"]["label"] == "网络"
    assert "urgency" not in res and res["due_at"] is None


@pytest.mark.parametrize("classifier", ["svm", "logreg"])
def test_either_classifier_trains_a_bundle_that_ranks_the_right_label_first(tmp_path, classifier):
    path = _write(tmp_path / "d.jsonl", "jsonl")
    config = TrainConfig(data=[str(path)], text_column="内容", heads={"topic": "类别"}, folds=2,
                         classifier=classifier, features=FeatureConfig(min_df=1, words=False))
    manifest = train(config, tmp_path / "bundle")
    assert manifest["training"]["config"]["classifier"] == classifier
    assert manifest["training"]["config"]["C"] == {"svm": 1.0, "logreg": 10.0}[classifier]
    res = load(tmp_path / "bundle").score("话费又被多扣了").to_dict()
    assert res["topic"]["label"] == "费用"
    assert sum(t["probability"] for t in res["topic"]["top"]) <= 1.0 + 1e-6


def test_a_label_rarer_than_the_folds_trains_with_a_clear_warning(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    rows = [{"内容": t, "类别": a} for t, a, _ in ROWS] + [{"内容": "路灯杆被车撞歪了", "类别": "市政"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    config = TrainConfig(data=[str(path)], text_column="内容", heads={"topic": "类别"}, folds=3,
                         features=FeatureConfig(min_df=1, words=False))
    train(config, tmp_path / "bundle")
    err = capsys.readouterr().err
    assert "topic: fewer rows than the 3 folds for '市政' (1)" in err
    assert "市政" in load(tmp_path / "bundle").labels["topic"]


def test_train_config_refuses_an_unknown_classifier_or_a_bad_c():
    with pytest.raises(ValueError, match="classifier must be one of svm, logreg"):
        TrainConfig(data=["x.csv"], classifier="forest")
    with pytest.raises(ValueError, match="C must be positive"):
        TrainConfig(data=["x.csv"], C=0.0)


def test_temperature_fit_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 3)) * 2
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    assert fit_temperature(true_logits * 3.0, y) == pytest.approx(3.0, rel=0.1)


def test_thresholds_reach_the_target_precision_on_their_data():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([1, 1, 1], size=2000)
    y = np.array([row.argmax() if rng.random() < row.max() else rng.integers(3) for row in probs])
    labels = ["a", "b", "c"]
    thresholds = choose_thresholds(y, probs, labels, 0.9)
    pred, conf = probs.argmax(1), probs.max(1)
    for c, label in enumerate(labels):
        auto = (pred == c) & (conf >= thresholds[label])
        if thresholds[label] < 1.0:
            assert (y[auto] == c).mean() >= 0.9


def test_same_day_threshold_meets_the_recall_target():
    labels = ["normal", "same_day", "within_24h"]
    rng = np.random.default_rng(2)
    y = rng.integers(3, size=1000)
    probs = rng.dirichlet([1, 1, 1], size=1000)
    probs[y == 1, 1] += 0.5
    probs /= probs.sum(1, keepdims=True)
    t = urgency_decision_threshold(y, probs, labels, np.zeros(1000, bool), 0.98)
    recall = (((probs.argmax(1) == 1) | (probs[:, 1] >= t)) & (y == 1)).sum() / (y == 1).sum()
    assert recall >= 0.98
    hits, n = int(recall * (y == 1).sum()), int((y == 1).sum())
    cautious = urgency_decision_threshold(y, probs, labels, np.zeros(1000, bool), 0.98, confidence=0.95)
    cautious_hits = int((((probs.argmax(1) == 1) | (probs[:, 1] >= cautious)) & (y == 1)).sum())
    assert cautious <= t and recall_lower_bound(cautious_hits, n, 0.95) >= 0.98 > recall_lower_bound(hits, n, 0.95)


def test_few_positives_fall_back_to_the_point_estimate():
    labels = ["normal", "same_day", "within_24h"]
    rng = np.random.default_rng(3)
    y = rng.integers(3, size=60)
    probs = rng.dirichlet([1, 1, 1], size=60)
    floor = np.zeros(60, bool)
    assert (urgency_decision_threshold(y, probs, labels, floor, 0.98, confidence=0.95)
            == urgency_decision_threshold(y, probs, labels, floor, 0.98))


def test_recall_lower_bound_is_below_the_estimate_and_tightens_with_n():
    assert recall_lower_bound(98, 100, 0.5) == pytest.approx(0.98)
    assert recall_lower_bound(98, 100, 0.95) < recall_lower_bound(980, 1000, 0.95) < 0.98
    assert recall_lower_bound(0, 0, 0.95) == 0.0
    assert recall_lower_bound(100, 100, 0.95) < 1.0


URGENT = [("楼里停电了，电梯也停了", "same_day"), ("家里停水一整天了", "same_day"),
          ("小区断电，冰箱都停了", "same_day"), ("燃气味很重，怕出事", "same_day"),
          ("快递三天没到，催一下", "within_24h"), ("退款还没到账，请今天处理", "within_24h"),
          ("发票开错了，麻烦重开", "normal"), ("想咨询一下套餐怎么改", "normal")] * 6


def test_rules_move_the_same_day_threshold_only_when_asked(tmp_path):
    """Rules written while reading the training rows look better on them than on new
    tickets, so by default the threshold is chosen on the model alone."""
    data = tmp_path / "u.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "urgency": u}, ensure_ascii=False) for t, u in URGENT),
                    "utf-8")
    no_rules = tmp_path / "rules.json"
    spec = json.loads((Path(__file__).parent.parent / "triage" / "resources" / "rules.json").read_text("utf-8"))
    no_rules.write_text(json.dumps({**spec, "rules": []}, ensure_ascii=False), "utf-8")

    def threshold(name, **kwargs):
        config = TrainConfig(data=[str(data)], heads={"urgency": "urgency"}, folds=3, flag_heads=False,
                             same_day_recall=1.0, min_same_day_threshold=0.0, **kwargs)
        return train(config, tmp_path / name)["heads"]["urgency"]["decision"]["same_day_threshold"]

    default = threshold("default")
    assert default == threshold("empty", rules=str(no_rules))
    assert threshold("counted", rules_in_threshold=True) > default  # the floor catches the same_day rows


def test_with_rule_states_the_same_day_threshold_also_holds_for_the_model_alone(tmp_path):
    """Rules written from the training rows make the heads trust them more than new tickets
    deserve, so the threshold must also reach its recall with the rule states withheld."""
    from training.train import cross_validate
    from triage.normalize import normalize_text
    from triage.rules import load_rules
    from triage.tokenize import WordTokenizer, read_userdict

    data = tmp_path / "u.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "urgency": u}, ensure_ascii=False) for t, u in URGENT),
                    "utf-8")
    config = TrainConfig(data=[str(data)], heads={"urgency": "urgency"}, folds=3, flag_heads=False,
                         same_day_recall=1.0, min_same_day_threshold=0.0,
                         features=FeatureConfig(rule_states=0.5))
    dataset = read_dataset([data], heads={"urgency": "urgency"})
    normalized = [normalize_text(t) for t in dataset.texts]
    states = [load_rules().analyze(t)[1] for t in normalized]
    index = {"urgency": {lb: i for i, lb in enumerate(sorted(set(dataset.labels["urgency"])))}}
    oof, _, _, withheld = cross_validate(config, dataset, normalized, WordTokenizer(read_userdict()), index, states)
    assert set(withheld) == {"urgency"}
    stateless = np.array([not s for s in states])
    assert stateless.any() and (~stateless).any()
    assert np.allclose(withheld["urgency"][stateless], oof["urgency"][stateless])
    assert not np.allclose(withheld["urgency"][~stateless], oof["urgency"][~stateless])

    head = train(config, tmp_path / "bundle")["heads"]["urgency"]
    sd = head["labels"].index("same_day")
    y = np.array([index["urgency"][v] for v in dataset.labels["urgency"]])
    for logits in (oof["urgency"], withheld["urgency"]):
        probs = softmax_t(logits, head["temperature"])
        caught = (probs.argmax(1) == sd) | (probs[:, sd] >= head["decision"]["same_day_threshold"] - 1e-9)
        assert caught[y == sd].all()


@pytest.mark.parametrize("confidence", [0.5, 0.9])
def test_pooling_copies_of_the_same_scores_keeps_the_same_day_threshold(confidence):
    """Repeated cross-validations pool each row once per repeat; the threshold and its
    confidence bound must count every row once."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=600)
    probs = rng.dirichlet([1, 1, 1], size=600)
    labels = ["normal", "same_day", "within_24h"]
    floor = np.zeros(600, dtype=bool)
    alone = urgency_decision_threshold(y, probs, labels, floor, 0.95, confidence)
    pooled = urgency_decision_threshold(np.tile(y, 3), np.tile(probs, (3, 1)), labels, np.tile(floor, 3), 0.95,
                                        confidence, copies=3)
    assert pooled == alone


def test_a_one_head_cross_validation_repeats_the_full_runs_folds(tmp_path):
    from training.train import cross_validate
    from triage.normalize import normalize_text
    from triage.tokenize import WordTokenizer, read_userdict

    data = tmp_path / "u.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "urgency": u, "topic": "a" if i % 2 else "b"},
                                         ensure_ascii=False) for i, (t, u) in enumerate(URGENT)), "utf-8")
    heads = {"topic": "topic", "urgency": "urgency"}
    config = TrainConfig(data=[str(data)], heads=heads, folds=3, flag_heads=False)
    dataset = read_dataset([data], heads=heads)
    normalized = [normalize_text(t) for t in dataset.texts]
    index = {h: {lb: i for i, lb in enumerate(sorted(set(v)))} for h, v in dataset.labels.items()}
    tokenizer = WordTokenizer(read_userdict())
    full, _, folds, _ = cross_validate(config, dataset, normalized, tokenizer, index)
    one, _, same_folds, _ = cross_validate(config, dataset, normalized, tokenizer, index, only="urgency")
    assert set(one) == {"urgency"} and (folds == same_folds).all()
    np.testing.assert_allclose(one["urgency"], full["urgency"])
    _, _, other_folds, _ = cross_validate(config, dataset, normalized, tokenizer, index, seed=7, only="urgency")
    assert (other_folds != folds).any()


def test_threshold_repeats_must_be_at_least_one():
    with pytest.raises(ValueError, match="threshold_repeats"):
        TrainConfig(data=["x.csv"], threshold_repeats=0)
