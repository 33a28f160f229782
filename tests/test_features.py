"""The vectorised batch featurizer equals the obvious per-text count."""

import json
from pathlib import Path

import numpy as np
import pytest

from triage import features
from triage.features import RULE_PREFIX, FeatureConfig, Featurizer, KeyTable, fit_featurizer, frequent_first
from triage.normalize import feature_text, normalize_text
from triage.tokenize import WordTokenizer, read_userdict

CORPUS = Path(__file__).resolve().parents[1] / "datasets" / "corpus"


def _texts(split, n):
    lines = (CORPUS / f"{split}.jsonl").read_text("utf-8").splitlines()[:n]
    return [normalize_text(json.loads(line)["text"]) for line in lines]


@pytest.fixture(scope="module")
def tokenizer():
    return WordTokenizer(read_userdict())


@pytest.fixture(scope="module", params=[FeatureConfig(max_features=20_000),
                                        FeatureConfig(char_ngram_min=2, word_bigrams=True, max_features=20_000),
                                        FeatureConfig(char_ngram_max=4, words=False, max_features=20_000)],
                ids=["default", "bigrams", "long-ngrams"])
def featurizer(request, tokenizer):
    return fit_featurizer(_texts("train", 600), request.param, tokenizer)


def _reference_row(featurizer, text):
    counts = featurizer.reference_counts(text)
    idx = np.array(sorted(counts), dtype=np.int64)
    w = (1.0 + np.log([counts[i] for i in idx])) * featurizer.idf[idx] if len(idx) else np.zeros(0)
    return idx, (w / np.linalg.norm(w) if len(idx) else w)


def test_batch_rows_equal_reference_counts(featurizer):
    texts = _texts("test", 120) + ["", "！！！", "停电", "😀😀 停电了 🔥🔥🔥"]
    indptr, indices, weights = featurizer.transform_rows(texts)
    assert len(indptr) == len(texts) + 1 and weights.dtype == np.float32
    for i, text in enumerate(texts):
        ref_idx, ref_w = _reference_row(featurizer, text)
        np.testing.assert_array_equal(indices[indptr[i]:indptr[i + 1]], ref_idx)
        np.testing.assert_allclose(weights[indptr[i]:indptr[i + 1]], ref_w, rtol=1e-6)


def test_ngrams_never_cross_a_text_boundary(featurizer):
    """'停' + '电' in two tickets must not count the '停电' that exists only when joined."""
    assert "停电" in featurizer.vocabulary
    indptr, indices, _ = featurizer.transform_rows(["水停", "电费"])
    assert featurizer.vocabulary["停电"] not in indices


def test_a_row_does_not_depend_on_its_batch(featurizer):
    texts = _texts("test", 40) + _EDGE_TEXTS
    batch = featurizer.transform(texts).toarray()
    for i, text in enumerate(texts):
        idx, w = featurizer.transform_one(text)
        row = np.zeros(featurizer.n_features, dtype=np.float32)
        row[idx] = w
        np.testing.assert_array_equal(batch[i], row)


@pytest.mark.parametrize("n", [0, 1, 50_000])
def test_key_table_finds_every_key_and_nothing_else(n):
    rng = np.random.default_rng(n)
    keys = np.unique(rng.integers(0, 2**63, size=n, dtype=np.uint64))
    values = rng.permutation(len(keys))
    table = KeyTable(keys, values)
    absent = np.setdiff1d(rng.integers(0, 2**63, size=5_000, dtype=np.uint64), keys)
    np.testing.assert_array_equal(table.lookup(keys), values)
    assert (table.lookup(absent) == -1).all()
    assert table.lookup(np.zeros(0, dtype=np.uint64)).shape == (0,)
    if n > 1000:
        assert table.max_probe >= 1  # colliding keys were placed further along and still found


def test_rule_states_are_fixed_weight_features_outside_the_norm(tokenizer):
    texts = _texts("train", 300)
    states = [frozenset({"same_day:on"}) if i % 3 == 0 else frozenset({"same_day:neg"}) for i in range(300)]
    featurizer = fit_featurizer(texts, FeatureConfig(max_features=5_000, rule_states=0.25), tokenizer, states)
    on = featurizer.vocabulary[RULE_PREFIX + "same_day:on"]
    assert featurizer.n_features == 5_002 and featurizer.uses_rule_states
    indptr, indices, weights = featurizer.transform_rows(texts[:2], [{"same_day:on", "never:seen"}, set()])
    first = dict(zip(indices[:indptr[1]].tolist(), weights[:indptr[1]].tolist()))
    assert first.pop(on) == pytest.approx(0.25)
    assert np.linalg.norm(list(first.values())) == pytest.approx(1.0, abs=1e-5)
    assert (np.diff(indices[:indptr[1]]) > 0).all()
    without = featurizer.transform_rows(texts[:2])
    assert np.array_equal(without[1][without[0][1]:], indices[indptr[1]:])
    assert on not in without[1]


def test_rule_states_are_left_out_at_weight_zero(tokenizer):
    texts = _texts("train", 100)
    featurizer = fit_featurizer(texts, FeatureConfig(max_features=5_000, rule_states=0.0), tokenizer,
                                [frozenset({"same_day:on"})] * 100)
    assert not featurizer.uses_rule_states
    assert not any(g.startswith(RULE_PREFIX) for g in featurizer.vocabulary)


def test_single_text_path_equals_its_batch_row_with_rule_states(tokenizer):
    texts = _texts("train", 300)
    states = [frozenset({"same_day:on"}) if i % 3 == 0 else frozenset({"same_day:neg"}) for i in range(300)]
    featurizer = fit_featurizer(texts, FeatureConfig(max_features=5_000, rule_states=0.25), tokenizer, states)
    probe = texts[:20] + ["", "！！！"]
    probe_states = [states[i] for i in range(20)] + [frozenset({"same_day:on"}), frozenset()]
    indptr, indices, weights = featurizer.transform_rows(probe, probe_states)
    for i, (text, st) in enumerate(zip(probe, probe_states)):
        one = featurizer.transform_rows([text], [st])
        np.testing.assert_array_equal(one[0], [0, indptr[i + 1] - indptr[i]])
        np.testing.assert_array_equal(one[1], indices[indptr[i]:indptr[i + 1]])
        np.testing.assert_array_equal(one[2], weights[indptr[i]:indptr[i + 1]])


def test_frequent_first_renumbers_features_and_keeps_every_vector(featurizer):
    vocabulary, idf, order = frequent_first(featurizer.vocabulary, featurizer.idf)
    renumbered = Featurizer(config=featurizer.config, vocabulary=vocabulary, idf=idf, tokenizer=featurizer.tokenizer)
    assert (np.diff(renumbered.idf) >= 0).all()
    assert sorted(order.tolist()) == list(range(featurizer.n_features))
    for gram, new in list(renumbered.vocabulary.items())[:2000]:
        assert order[new] == featurizer.vocabulary[gram]
    texts = _texts("test", 30)
    before, after = featurizer.transform(texts).toarray(), renumbered.transform(texts).toarray()
    np.testing.assert_array_equal(after, before[:, order])


compiled = pytest.mark.skipif(features._featurize is None, reason="triage._featurize was not built (no C compiler)")

_EDGE_TEXTS = ["", "！！！", "停电", "啊" * 3000, "😀😀 停电了 🔥🔥🔥", "a b c", "停电" * 5000]


@compiled
def test_compiled_single_path_gives_the_numpy_paths_bits(featurizer):
    if not featurizer.compiled:
        pytest.skip("n-grams longer than 3 have no integer key: no compiled path")
    for text in _texts("test", 300) + _EDGE_TEXTS:
        view = feature_text(text, featurizer.config.text_view)
        fast, slow = featurizer._transform_single(view, None), featurizer._transform_single_numpy(view, None)
        for a, b in zip(fast, slow):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


@compiled
def test_compiled_featurizer_rejects_wrong_arguments():
    fn, index_table = features._featurize.featurize_one, features._featurize.index_table
    keys, index = np.array([ord("停"), ord("电")], dtype=np.uint64), np.array([0, 1], dtype=np.int64)
    table = np.empty(2 * 8, dtype=np.uint64)
    assert index_table(keys, index, table) == 0
    log_tf, idf = 1.0 + np.log(np.arange(1, 64, dtype=np.float64)), np.ones(2)
    out_i, out_w = np.empty(16, dtype=np.int64), np.empty(16, dtype=np.float32)
    assert fn("停电停", [], 1, 1, False, table, log_tf, idf, out_i, out_w) == 2
    assert out_i[:2].tolist() == [0, 1]
    with pytest.raises(ValueError, match="n-gram sizes"):
        fn("停电", [], 1, 4, False, table, log_tf, idf, out_i, out_w)
    with pytest.raises(TypeError, match="out_weight must have 4-byte items"):
        fn("停电", [], 1, 3, False, table, log_tf, idf, out_i, out_i)
    with pytest.raises(ValueError, match="too small"):
        fn("停电" * 10, [], 1, 3, False, table, log_tf, idf, out_i, out_w)
    with pytest.raises(ValueError, match="power of two"):
        fn("停电", [], 1, 3, False, table[:12], log_tf, idf, out_i, out_w)
    with pytest.raises(TypeError, match="words must be str"):
        fn("停电", ["停", 3], 1, 3, False, table, log_tf, idf, out_i, out_w)
    with pytest.raises(TypeError, match="words must be str"):
        features._featurize.word_keys(["停", None], np.empty(2, dtype=np.uint64))
    with pytest.raises(ValueError, match="at least twice the keys"):
        index_table(keys, index, np.empty(2 * 2, dtype=np.uint64)[:2 * 1 + 1])
    with pytest.raises(ValueError, match="non-zero"):
        index_table(np.array([0], dtype=np.uint64), index[:1], table)
    assert index_table(np.array([5, 5], dtype=np.uint64), index, table) == 1


@compiled
def test_compiled_word_keys_tell_apart_strings_of_equal_bytes():
    """'cb' and '扣' are the bytes 63 62 in CPython's compact strings; their keys must differ."""
    out = np.empty(4, dtype=np.uint64)
    features._featurize.word_keys(["cb", "扣", "停电", "停 电"], out)
    assert len(set(out.tolist())) == 4 and (out >> np.uint64(63) == 1).all()


@compiled
def test_colliding_word_hashes_fall_back_to_the_numpy_path(featurizer, monkeypatch):
    real = features._featurize

    class Colliding:
        featurize_one, index_table = real.featurize_one, real.index_table

        @staticmethod
        def word_keys(words, out):
            out[:] = np.uint64(1 << 63)

    monkeypatch.setattr(features, "_featurize", Colliding)
    fallback = Featurizer(config=featurizer.config, vocabulary=featurizer.vocabulary, idf=featurizer.idf,
                          tokenizer=featurizer.tokenizer)
    assert not fallback.compiled
    text = feature_text(_texts("test", 1)[0], featurizer.config.text_view)
    for a, b in zip(fallback._transform_single(text, None), featurizer._transform_single_numpy(text, None)):
        np.testing.assert_array_equal(a, b)
