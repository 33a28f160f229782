"""Sparse TF-IDF features shared by training and inference.

Training fits the vocabulary and IDF weights with this very code, so the features a
bundle sees in production are the features it was trained on, by construction.
Features are character n-grams plus jieba words (prefixed to keep the two spaces
apart); weights are sublinear TF (1 + ln tf) times smoothed IDF, L2-normalised.
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import repeat
from dataclasses import dataclass, field

import numpy as np

from triage.normalize import feature_text
from triage.tokenize import WordTokenizer

WORD_PREFIX = "\x01"


@dataclass(frozen=True)
class FeatureConfig:
    char_ngram_min: int = 1
    char_ngram_max: int = 3
    words: bool = True
    word_bigrams: bool = False
    min_df: int = 2
    max_features: int = 120_000

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def analyze(text: str, config: FeatureConfig, tokenizer: WordTokenizer | None) -> list[str]:
    """The feature strings of one already feature-normalised text (with repeats)."""
    n = len(text)
    grams: list[str] = []
    for size in range(config.char_ngram_min, config.char_ngram_max + 1):
        grams += list(text) if size == 1 else [text[i:i + size] for i in range(n - size + 1)]
    if config.words and tokenizer is not None:
        words = [w for w in tokenizer.cut(text) if w != " "]
        grams += [WORD_PREFIX + w for w in words]
        if config.word_bigrams:
            grams += [f"{WORD_PREFIX}{a} {b}" for a, b in zip(words, words[1:])]
    return grams


@dataclass
class Featurizer:
    """Maps a normalised text to (indices, weights) of its TF-IDF vector."""

    config: FeatureConfig
    vocabulary: dict[str, int]
    idf: np.ndarray
    tokenizer: WordTokenizer | None = field(default=None, repr=False)

    @property
    def n_features(self) -> int:
        return len(self.vocabulary)

    def transform_one(self, normalized: str) -> tuple[np.ndarray, np.ndarray]:
        counts = Counter(analyze(feature_text(normalized), self.config, self.tokenizer))
        ids = np.array(list(map(self.vocabulary.get, counts, repeat(-1, len(counts)))), dtype=np.int64)
        tf = np.array(list(counts.values()), dtype=np.float64)
        known = ids >= 0
        indices, tf = ids[known], tf[known]
        if not len(indices):
            return indices, np.zeros(0, dtype=np.float32)
        weights = (1.0 + np.log(tf)) * self.idf[indices]
        weights /= math.sqrt(float(weights @ weights))
        return indices, weights.astype(np.float32)

    def transform(self, normalized_texts) -> "scipy.sparse.csr_matrix":  # noqa: F821
        """A CSR matrix of all texts (used by training and the batch path)."""
        from scipy import sparse

        rows = [self.transform_one(t) for t in normalized_texts]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(r[0]) for r in rows])
        indices = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int64)
        data = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, np.float32)
        return sparse.csr_matrix((data, indices, indptr), shape=(len(rows), self.n_features))

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "n_features": self.n_features}


def fit_featurizer(normalized_texts, config: FeatureConfig, tokenizer: WordTokenizer | None) -> Featurizer:
    """Choose the vocabulary (document frequency >= min_df, most frequent first) and IDF."""
    df: dict[str, int] = {}
    n_docs = 0
    for text in normalized_texts:
        n_docs += 1
        for gram in set(analyze(feature_text(text), config, tokenizer)):
            df[gram] = df.get(gram, 0) + 1
    kept = [(g, c) for g, c in df.items() if c >= config.min_df]
    kept.sort(key=lambda gc: (-gc[1], gc[0]))
    kept = kept[:config.max_features]
    kept.sort(key=lambda gc: gc[0])
    vocabulary = {g: i for i, (g, _) in enumerate(kept)}
    counts = np.array([c for _, c in kept], dtype=np.float64)
    idf = np.log((1.0 + n_docs) / (1.0 + counts)) + 1.0
    return Featurizer(config=config, vocabulary=vocabulary, idf=idf, tokenizer=tokenizer)
