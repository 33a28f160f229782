"""Sparse TF-IDF features shared by training and inference.

Training fits the vocabulary and IDF weights with this very code, so the features a
bundle sees in production are the features it was trained on, by construction.
Features are character n-grams plus jieba words (prefixed to keep the two spaces
apart); weights are sublinear TF (1 + ln tf) times smoothed IDF, L2-normalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from triage.normalize import feature_text
from triage.tokenize import WordTokenizer

WORD_PREFIX = "\x01"
_CODE_BITS = 21  # every Unicode code point fits; three of them fit in 63 bits
_MAX_KEYED_NGRAM = 3


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


def gram_key(gram: str) -> int:
    """The integer key of a character n-gram (n <= 3): its code points, 21 bits each."""
    key = 0
    for ch in gram:
        key = (key << _CODE_BITS) | ord(ch)
    return key


def char_gram_keys(text: str, lo: int, hi: int) -> np.ndarray:
    """Integer keys of all character n-grams of ``text`` for lo <= n <= hi (hi <= 3)."""
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    parts, keys = [], cps
    for size in range(1, hi + 1):
        if size > 1:
            keys = (keys[:-1] << np.uint64(_CODE_BITS)) | cps[size - 1:]
        if size >= lo:
            parts.append(keys)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


@dataclass
class Featurizer:
    """Maps a normalised text to (indices, weights) of its TF-IDF vector.

    Character n-grams are looked up as integer keys in a sorted array (vectorised),
    words in a dictionary; the result equals counting ``analyze`` strings against the
    vocabulary, which ``reference_counts`` does and the tests compare.
    """

    config: FeatureConfig
    vocabulary: dict[str, int]
    idf: np.ndarray
    tokenizer: WordTokenizer | None = field(default=None, repr=False)

    def __post_init__(self):
        self._keyed = self.config.char_ngram_max <= _MAX_KEYED_NGRAM
        chars = [(gram_key(g), i) for g, i in self.vocabulary.items()
                 if not g.startswith(WORD_PREFIX) and len(g) <= _MAX_KEYED_NGRAM]
        chars.sort()
        self._keys = np.array([k for k, _ in chars], dtype=np.uint64)
        self._key_index = np.array([i for _, i in chars], dtype=np.int64)
        self._words = {g[len(WORD_PREFIX):]: i for g, i in self.vocabulary.items() if g.startswith(WORD_PREFIX)}

    @property
    def n_features(self) -> int:
        return len(self.vocabulary)

    def reference_counts(self, normalized: str) -> dict[int, int]:
        """Feature index -> count, the slow and obvious way (for tests and long n-grams)."""
        counts: dict[int, int] = {}
        for gram in analyze(feature_text(normalized), self.config, self.tokenizer):
            idx = self.vocabulary.get(gram)
            if idx is not None:
                counts[idx] = counts.get(idx, 0) + 1
        return counts

    def _counts(self, normalized: str) -> tuple[np.ndarray, np.ndarray]:
        if not self._keyed:
            counts = self.reference_counts(normalized)
            return (np.fromiter(counts.keys(), np.int64, len(counts)),
                    np.fromiter(counts.values(), np.float64, len(counts)))
        text = feature_text(normalized)
        keys, counts = np.unique(char_gram_keys(text, self.config.char_ngram_min, self.config.char_ngram_max),
                                 return_counts=True)
        pos = np.searchsorted(self._keys, keys)
        pos[pos == len(self._keys)] = 0
        hit = self._keys[pos] == keys if len(self._keys) else np.zeros(len(keys), dtype=bool)
        indices, tf = self._key_index[pos[hit]], counts[hit].astype(np.float64)
        if self.config.words and self.tokenizer is not None:
            words = [w for w in self.tokenizer.cut(text) if w != " "]
            if self.config.word_bigrams:
                words += [f"{a} {b}" for a, b in zip(words, words[1:])]
            found: dict[int, int] = {}
            for i in map(self._words.get, words):
                if i is not None:
                    found[i] = found.get(i, 0) + 1
            if found:
                indices = np.concatenate([indices, np.fromiter(found.keys(), np.int64, len(found))])
                tf = np.concatenate([tf, np.fromiter(found.values(), np.float64, len(found))])
        return indices, tf

    def transform_one(self, normalized: str) -> tuple[np.ndarray, np.ndarray]:
        indices, tf = self._counts(normalized)
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
