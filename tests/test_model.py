import json
import shutil

import numpy as np
import pytest

from triage.bundle import read_manifest
from triage.errors import BundleError, InvalidTicketError
from triage.model import load
from triage.normalize import normalize_text
from triage.rules import URGENCY_ORDER

HEADS = ("category", "department", "urgency", "sentiment")


def test_score_returns_every_head_with_top3_and_due_time(small_model):
    res = small_model.score({"id": "t1", "text": "小区停水一整天了，物业电话打不通", "channel": "web",
                             "received_at": "2026-11-24T10:00:00+08:00"}).to_dict()
    for head in HEADS:
        top = res[head]["top"]
        assert res[head]["label"] == top[0]["label"] or head == "urgency"
        assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
        assert 0.0 <= res[head]["confidence"] <= 1.0
    assert res["id"] == "t1"
    assert res["urgency"]["label"] == "same_day"
    assert any(r["source"] == "rule" for r in res["urgency"]["reasons"])
    assert res["due_at"] == "2026-11-24T18:00:00+08:00"
    assert res["model_version"] == small_model.model_version
    json.dumps(res, ensure_ascii=False)


def test_probabilities_sum_to_one(small_model):
    probs = small_model.predict_proba(["客户反映宽带很慢", "电梯困人"])
    for p in probs.values():
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_renumbered_features_score_as_the_bundle_files_do(small_model):
    """In memory the features are renumbered most frequent first; each head still gives the
    probabilities its own ONNX file gives under the bundle's numbering."""
    import onnxruntime as ort

    bundle_featurizer, _ = small_model._load_featurizer(renumber=False)
    assert bundle_featurizer.vocabulary != small_model.featurizer.vocabulary
    texts = [normalize_text(t) for t in ("小区停水一整天了，物业电话打不通", "快递三天没更新物流，客服态度很差",
                                         "电梯困人了，快来人", "感谢王师傅，服务很好", "")]
    states = [small_model.rules.analyze(t)[1] for t in texts]
    indptr, indices, weights = bundle_featurizer.transform_rows(texts, states)
    width = int(np.diff(indptr).max())
    padded_idx = np.full((len(texts), width), bundle_featurizer.n_features, dtype=np.int64)
    padded_w = np.zeros((len(texts), width), dtype=np.float32)
    for i in range(len(texts)):
        n = indptr[i + 1] - indptr[i]
        padded_idx[i, :n], padded_w[i, :n] = indices[indptr[i]:indptr[i + 1]], weights[indptr[i]:indptr[i + 1]]
    probs = small_model.predict_proba(texts)
    for head in small_model.heads:
        session = ort.InferenceSession(str(small_model.path / small_model.manifest["heads"][head]["onnx"]),
                                       providers=["CPUExecutionProvider"])
        expected = session.run(None, {"indices": padded_idx, "weights": padded_w})[0]
        np.testing.assert_allclose(probs[head], expected, atol=1e-5)


def test_rules_raise_urgency_and_never_lower_it(small_model):
    texts = ["厨房一股很重的煤气味，阀门关了还有", "感谢王师傅，服务很好", "快递三天没更新物流",
             "电梯困人了，快来人", "账单多扣了二十块钱"]
    probs = small_model.predict_proba(texts)["urgency"]
    labels = small_model.heads["urgency"].labels
    threshold = small_model.heads["urgency"].decision.get("same_day_threshold", 1.1)
    for text, p in zip(texts, probs):
        model_label = labels[int(np.argmax(p))]
        if p[labels.index("same_day")] >= threshold:
            model_label = "same_day"
        final = small_model.score(text).label("urgency")
        assert URGENCY_ORDER.index(final) >= URGENCY_ORDER.index(model_label)
    assert small_model.score(texts[0]).label("urgency") == "same_day"


def test_escalation_flags_carry_evidence(small_model):
    text = "第三次打电话了还没人管，再不处理我就去12315投诉，还要发抖音曝光"
    res = small_model.score(text).to_dict()
    flags = {f["flag"]: f["evidence"] for f in res["escalation"]}
    assert {"regulator", "media", "repeat_complaint"} <= set(flags)
    for evidence in flags.values():
        for ev in evidence:
            assert text[ev["start"]:ev["end"]] == ev["text"]


def test_self_harm_threat_always_needs_review(small_model):
    res = small_model.score("再不给我解决我就跳楼")
    assert res.needs_review and "flag_self_harm_threat" in res.review_reasons
    assert res.label("urgency") == "same_day"


def test_score_batch_keeps_order_and_reports_bad_tickets_in_place(small_model):
    tickets = [{"id": "a", "text": "停电了"}, {"id": "b", "text": "  "}, "网速很慢", {"text": 5}]
    results = small_model.score_batch(tickets, errors="return")
    assert results[0].id == "a"
    assert isinstance(results[1], InvalidTicketError) and results[1].code == "empty_text"
    assert results[2].id is None
    assert isinstance(results[3], InvalidTicketError) and results[3].code == "bad_type"
    with pytest.raises(InvalidTicketError):
        small_model.score_batch(tickets)


def test_batch_and_single_scores_agree(small_model):
    texts = ["快递显示签收但我没收到", "信用卡被盗刷了三笔", "酒店房间有蟑螂", "暖气不热"]
    batch = small_model.score_batch(texts)
    for text, res in zip(texts, batch):
        single = small_model.score(text)
        for head in HEADS:
            assert single.heads[head].label == res.heads[head].label
            assert single.heads[head].confidence == pytest.approx(res.heads[head].confidence, abs=1e-6)
            assert [lb for lb, _ in single.heads[head].top] == [lb for lb, _ in res.heads[head].top]


def test_top_labels_break_ties_by_label_order_in_single_and_batch_scoring(small_model, monkeypatch):
    labels = small_model.heads["sentiment"].labels
    tied = np.full((1, len(labels)), 1.0 / len(labels), dtype=np.float32)
    run = small_model._run
    monkeypatch.setattr(small_model, "_run", lambda *a: {**run(*a), "sentiment": np.repeat(tied, len(a[0]) - 1, 0)})
    for result in [small_model.score("酒店房间有蟑螂"), *small_model.score_batch(["酒店房间有蟑螂", "暖气不热"])]:
        assert [lb for lb, _ in result.heads["sentiment"].top] == labels[:3]


@pytest.mark.parametrize("received_at, code", [("yesterday", "bad_received_at"), (12, "bad_received_at"),
                                               ("9999-12-31T23:59:59+00:00", "bad_received_at")])
def test_bad_received_at_is_refused(small_model, received_at, code):
    with pytest.raises(InvalidTicketError) as err:
        small_model.score({"text": "停电", "received_at": received_at})
    assert err.value.code == code


def test_naive_received_at_is_taken_as_shanghai_time(small_model):
    res = small_model.score({"text": "网速很慢", "received_at": "2026-11-24T10:00:00"})
    assert res.received_at.isoformat() == "2026-11-24T10:00:00+08:00"


def _copy(bundle, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(bundle, dst)
    return dst


def _copy_with_manifest(bundle, tmp_path, edit):
    """A copy of ``bundle`` whose manifest ``edit`` (a function of the parsed manifest) changed."""
    dst = _copy(bundle, tmp_path)
    manifest = json.loads((dst / "manifest.json").read_text("utf-8"))
    edit(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    return dst


def test_corrupt_onnx_file_is_refused(small_bundle, tmp_path):
    dst = _copy(small_bundle, tmp_path)
    path = dst / "heads" / "category.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupt or truncated"):
        load(dst)


def test_truncated_vocabulary_is_refused(small_bundle, tmp_path):
    dst = _copy(small_bundle, tmp_path)
    path = dst / "features" / "vocabulary.json"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BundleError):
        load(dst)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(schema_version=99), "schema version"),
    (lambda m: m.pop("heads"), "lacks heads"),
    (lambda m: m["heads"]["urgency"].update(labels=["x"]), "two distinct labels"),
    (lambda m: m.pop("rules"), "rule states but the bundle ships no rules"),
])
def test_bad_manifest_is_refused_with_a_clear_message(small_bundle, tmp_path, edit, message):
    dst = _copy_with_manifest(small_bundle, tmp_path, edit)
    with pytest.raises(BundleError, match=message):
        load(dst)


def test_missing_bundle_and_missing_manifest_are_refused(tmp_path):
    with pytest.raises(BundleError, match="no model bundle"):
        load(tmp_path / "nope")
    with pytest.raises(BundleError, match="not a triage bundle"):
        load(tmp_path)
    (tmp_path / "manifest.json").write_text("{oops", "utf-8")
    with pytest.raises(BundleError, match="corrupt"):
        load(tmp_path)


def test_manifest_records_provenance(small_bundle):
    manifest = read_manifest(small_bundle)
    assert len(manifest["training"]["data_sha256"]) == 64
    assert manifest["training"]["n_rows"] == 400
    assert {"numpy", "onnxruntime"} <= set(manifest["library_versions"])
    for head in HEADS:
        spec = manifest["heads"][head]
        assert set(spec["thresholds"]) == set(spec["labels"])
        assert spec["temperature"] > 0


def test_flag_heads_are_kept_apart_from_label_heads(small_model):
    assert set(small_model.heads) == set(HEADS)
    assert set(small_model.predict_proba(["停电了"])) == set(HEADS)
    for flag, head in small_model.flag_heads.items():
        assert head.labels == ["no", "yes"]
        assert 0.5 <= head.decision["flag_threshold"] <= 1.01


def test_model_flag_evidence_indexes_the_original_text(small_model):
    if not small_model.flag_heads:
        pytest.skip("the small bundle has no flag heads")
    flag = next(iter(small_model.flag_heads))
    text = "我已經第三次打電話投訴了，再不處理就找記者曝光，還要求賠償！"
    from triage.normalize import normalize_text

    normalized = normalize_text(text)
    row = small_model.featurizer.transform_one(normalized)
    spans = small_model._evidence_spans(small_model._flag_contrib[flag], row, normalized, text)
    for span in spans:
        assert text[span["start"]:span["end"]] == span["text"]


def test_scores_use_the_rule_states_the_heads_were_trained_with(small_model):
    assert small_model.featurizer.uses_rule_states
    text = "小区停电了，电梯也停了"
    scored = dict(small_model.score(text).heads["urgency"].top)
    alone = small_model.predict_proba([normalize_text(text)])["urgency"][0]
    assert [scored[lb] for lb in small_model.heads["urgency"].labels] == pytest.approx(alone.tolist(), abs=1e-6)
    no_states = small_model.featurizer.transform_rows([normalize_text(text)])
    with_states = small_model.featurizer.transform_rows([normalize_text(text)],
                                                        [small_model.rules.analyze(normalize_text(text))[1]])
    assert len(with_states[1]) > len(no_states[1])


def test_a_bundle_from_before_rule_states_loads_without_them(small_bundle, tmp_path):
    old = load(_copy_with_manifest(small_bundle, tmp_path, lambda m: m["features"]["config"].pop("rule_states")))
    assert old.featurizer.config.rule_states == 0.0 and not old.featurizer.uses_rule_states
    assert old.score("小区停电了").label("urgency") in old.heads["urgency"].labels


def _score_with_threshold_only(small_bundle, tmp_path, text):
    """Score ``text`` with a same_day decision threshold that raises anything the model ranks otherwise."""
    model = load(_copy_with_manifest(small_bundle, tmp_path,
                                     lambda m: m["heads"]["urgency"]["decision"].update(same_day_threshold=1e-9)))
    probs = model.predict_proba([normalize_text(text)])["urgency"][0]
    assert model.heads["urgency"].labels[int(np.argmax(probs))] != "same_day"
    res = model.score(text)
    assert res.label("urgency") == "same_day"
    return res


def test_a_same_day_call_only_the_threshold_made_stands_but_needs_review(small_bundle, tmp_path):
    res = _score_with_threshold_only(small_bundle, tmp_path, "营业员办业务时一直在玩手机，态度很差")
    assert res.heads["urgency"].needs_review and "urgency_same_day_by_threshold" in res.review_reasons
    assert any(r["source"] == "decision" for r in res.urgency_reasons)


def test_a_rule_that_agrees_with_the_threshold_clears_the_review(small_bundle, tmp_path):
    res = _score_with_threshold_only(small_bundle, tmp_path, "营业员态度很差，顺便说一下门口电线在打火花")
    assert {r["source"] for r in res.urgency_reasons} >= {"decision", "rule"}
    assert not res.heads["urgency"].needs_review
    assert "urgency_same_day_by_threshold" not in res.review_reasons


def test_spaced_out_text_scores_like_the_text_without_gaps(small_model):
    joined = small_model.score("厨房一股很重的煤气味，阀门关了还有").to_dict()
    spaced = small_model.score("厨 房 一 股 很 重 的 煤 气 味 ， 阀 门 关 了 还 有").to_dict()
    for head in HEADS:
        assert spaced[head]["label"] == joined[head]["label"]
        assert spaced[head]["confidence"] == pytest.approx(joined[head]["confidence"], abs=1e-6)


def test_a_bundle_from_before_text_views_reads_text_as_it_was_trained(small_bundle, small_model, tmp_path):
    assert small_model.featurizer.config.text_view == 2
    dst = _copy_with_manifest(small_bundle, tmp_path, lambda m: m["features"]["config"].pop("text_view"))
    assert load(dst).featurizer.config.text_view == 1


def test_single_tickets_scored_from_many_threads_match_serial_scores(small_model):
    from concurrent.futures import ThreadPoolExecutor

    texts = ["快递显示签收但我没收到", "信用卡被盗刷了三笔", "酒店房间有蟑螂", "暖气不热", "小区停电两天了"] * 8
    serial = [small_model.score(t) for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(small_model.score, texts))
    for a, b in zip(serial, parallel):
        for head in HEADS:
            assert a.heads[head].label == b.heads[head].label and a.heads[head].top == b.heads[head].top
