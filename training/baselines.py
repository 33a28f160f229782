"""Baselines trained on the same folds as the linear tier, for honest comparison."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from triage.normalize import feature_text
from triage.tokenize import WordTokenizer, read_userdict

_tokenizer: WordTokenizer | None = None


def _words(text: str) -> str:
    global _tokenizer
    if _tokenizer is None:
        _tokenizer = WordTokenizer(read_userdict())
    return " ".join(w for w in _tokenizer.cut(feature_text(text)) if not w.isspace())


def fit_predict_fasttext(train_texts: list[str], y: np.ndarray, test_texts: list[str], seed: int = 0) -> np.ndarray:
    """fastText on jieba words (epoch 25, word bigrams), as in the field notes' baseline.

    fasttext-wheel's ``predict`` breaks on numpy 2, so the wrapped model's
    ``multilinePredict`` is called directly.
    """
    import fasttext

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        for text, label in zip(train_texts, y):
            fh.write(f"__label__{label} {_words(text)}\n")
        path = fh.name
    try:
        model = fasttext.train_supervised(path, epoch=25, wordNgrams=2, lr=0.5, dim=100, seed=seed,
                                          thread=1, verbose=0, minCount=1)
    finally:
        os.unlink(path)
    lines = [_words(t) for t in test_texts]
    labels, _ = model.f.multilinePredict(lines, 1, 0.0, "strict")
    return np.array([int(lb[0].replace("__label__", "")) for lb in labels])


def fit_predict_sklearn(train_texts, y, test_texts, seed: int = 0) -> np.ndarray:
    """Plain scikit-learn pipeline: character 1-3-gram TF-IDF + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2),
                         LogisticRegression(C=10, max_iter=3000, random_state=seed))
    return pipe.fit(train_texts, y).predict(test_texts)


BASELINES = {"fasttext": fit_predict_fasttext, "sklearn_char_lr": fit_predict_sklearn}


def fit_predict_baseline(name: str, train_texts, y, test_texts, seed: int = 0) -> np.ndarray:
    try:
        fn = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}") from None
    return fn(train_texts, y, test_texts, seed=seed)
