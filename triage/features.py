"""Sparse TF-IDF features shared by training and inference.

Training fits the vocabulary and IDF weights with this very code, so the features a
bundle sees in production are the features it was trained on, by construction.
Features are character n-grams plus jieba words (prefixed to keep the two spaces
apart); weights are sublinear TF (1 + ln tf) times smoothed IDF, L2-normalised.
Optionally the rule states of a text (``RuleSet.analyze``: which urgency rule matched and
whether it was a hit, negated, hypothetical or over) are added as binary features of a
fixed weight outside the norm, prefixed ``RULE_PREFIX``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from triage.normalize import FEATURE_VIEW, feature_text
from triage.tokenize import WordTokenizer

try:
    from triage import _featurize
except ImportError:  # built without a C compiler: the numpy path gives the same rows
    _featurize = None

WORD_PREFIX = "\x01"
RULE_PREFIX = "\x02"
_CODE_BITS = 21  # every Unicode code point fits; three of them fit in 63 bits
_MAX_KEYED_NGRAM = 3
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TABLE_MIN_QUERIES = 4096  # below this, binary search over the sorted keys is faster (cache-warm)
_LOG_TF_SIZE = 8192  # texts up to this length take the compiled single-text path


@dataclass(frozen=True)
class FeatureConfig:
    char_ngram_min: int = 1
    char_ngram_max: int = 3
    words: bool = True
    word_bigrams: bool = False
    min_df: int = 2
    max_features: int = 80_000
    rule_states: float = 0.0
    text_view: int = FEATURE_VIEW

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


def char_ngram_keys(texts: list[str], lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer keys of every character n-gram (``lo`` <= n <= ``hi`` <= 3) of ``texts`` that
    stays inside its text, with each key's row (None for a single text)."""
    cps = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    single = len(texts) == 1
    row_of = None if single else np.repeat(np.arange(len(texts), dtype=np.int64), [len(t) for t in texts])
    keys_parts, rows_parts, keys = [], [], cps
    for size in range(1, hi + 1):
        if size > 1:
            keys = (keys[:-1] << np.uint64(_CODE_BITS)) | cps[size - 1:]
        if size < lo:
            continue
        if single:
            keys_parts.append(keys)
        else:
            same = row_of[:len(keys)] == row_of[size - 1:]
            keys_parts.append(keys[same])
            rows_parts.append(row_of[:len(keys)][same])
    if not keys_parts:
        return np.zeros(0, dtype=np.uint64), None if single else np.zeros(0, dtype=np.int64)
    return np.concatenate(keys_parts), None if single else np.concatenate(rows_parts)


class KeyTable:
    """A read-only open-addressing hash table from uint64 keys to int indices, probed in numpy.

    Linear probing at load factor <= 1/4; ``lookup`` resolves a whole array of queries
    with one gather per probe step, over the queries still unresolved.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray):
        bits = max(4, int(np.ceil(np.log2(max(1, len(keys)) * 4))))
        self._shift, self._mask = np.uint64(64 - bits), (1 << bits) - 1
        self._keys = np.zeros(1 << bits, dtype=np.uint64)
        self._values = np.full(1 << bits, -1, dtype=np.int32)
        home = self._home(keys)
        pending, probe, self.max_probe = np.arange(len(keys)), 0, -1
        while len(pending):
            slots = (home[pending] + probe) & self._mask
            free = self._values[slots] < 0
            _, first = np.unique(slots[free], return_index=True)
            won, won_slots = pending[free][first], slots[free][first]
            self._keys[won_slots], self._values[won_slots] = keys[won], values[won]
            pending = np.setdiff1d(pending, won, assume_unique=True)
            self.max_probe, probe = probe, probe + 1

    def _home(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * _GOLDEN) >> self._shift).astype(np.int64)

    def lookup(self, queries: np.ndarray) -> np.ndarray:
        """The value of every query, -1 where it is absent."""
        out = np.full(len(queries), -1, dtype=np.int64)
        active, slots = np.arange(len(queries)), self._home(queries)
        for _ in range(self.max_probe + 1):
            values = self._values[slots]
            occupied = values >= 0
            hit = occupied & (self._keys[slots] == queries[active])
            out[active[hit]] = values[hit]
            more = occupied & ~hit
            active, slots = active[more], (slots[more] + 1) & self._mask
            if not len(active):
                break
        return out


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
        self._table = KeyTable(self._keys, self._key_index)
        self._words = {g[len(WORD_PREFIX):]: i for g, i in self.vocabulary.items() if g.startswith(WORD_PREFIX)}
        self._states = {g[len(RULE_PREFIX):]: i for g, i in self.vocabulary.items() if g.startswith(RULE_PREFIX)}
        self._compiled = self._index_compiled() if _featurize is not None and self._keyed else None

    def _index_compiled(self) -> tuple | None:
        """The compiled path's lookup table of every key (character n-grams, words and word
        bigrams) with its feature index, and its IDF and 1 + ln tf arrays; None in the unlikely
        event that two word hashes collide (then the numpy path serves)."""
        words = list(self._words)
        word_keys = np.empty(len(words), dtype=np.uint64)
        _featurize.word_keys(words, word_keys)
        keys = np.concatenate([self._keys, word_keys])
        index = np.concatenate([self._key_index, np.fromiter(self._words.values(), dtype=np.int64, count=len(words))])
        table = np.empty(2 << max(4, int(np.ceil(np.log2(2 * max(1, len(keys)))))), dtype=np.uint64)
        if _featurize.index_table(keys, index, table):
            return None
        with np.errstate(divide="ignore"):
            log_tf = 1.0 + np.log(np.arange(_LOG_TF_SIZE, dtype=np.int64))  # the numpy path's 1 + ln tf
        return table, log_tf, np.ascontiguousarray(self.idf, dtype=np.float64)

    @property
    def compiled(self) -> bool:
        """Whether single texts take the compiled path (``triage._featurize``)."""
        return self._compiled is not None

    @property
    def uses_rule_states(self) -> bool:
        """Whether ``transform_rows`` wants each text's rule states (``RuleSet.analyze``)."""
        return bool(self._states) and self.config.rule_states > 0

    @property
    def n_features(self) -> int:
        return len(self.vocabulary)

    def reference_counts(self, normalized: str, *, featurised: bool = False) -> dict[int, int]:
        """Feature index -> count, the slow and obvious way (for tests and long n-grams)."""
        counts: dict[int, int] = {}
        text = normalized if featurised else feature_text(normalized, self.config.text_view)
        for gram in analyze(text, self.config, self.tokenizer):
            idx = self.vocabulary.get(gram)
            if idx is not None:
                counts[idx] = counts.get(idx, 0) + 1
        return counts

    def transform_one(self, normalized: str) -> tuple[np.ndarray, np.ndarray]:
        """(feature indices, float32 weights) of one normalised text."""
        _, indices, weights = self.transform_rows([normalized])
        return indices, weights

    def transform_rows(self, normalized_texts, states=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR parts (indptr, indices, float32 weights) of many texts, rows in input order.

        ``states`` holds each text's rule states when ``uses_rule_states``; they are added
        with weight ``config.rule_states`` after the text part is normalised.

        All texts are featurised together: their n-gram keys are computed over one
        concatenated code-point array (n-grams that would cross a text boundary are
        dropped), looked up in one pass (``KeyTable``, or binary search for a few keys)
        and counted per (row, feature) in one ``np.unique``. Within a row, indices are
        ascending.
        """
        texts = [feature_text(t, self.config.text_view) for t in normalized_texts]
        if len(texts) == 1 and self._keyed:
            return self._transform_single(texts[0], states[0] if states is not None else None)
        n_rows, n_features = len(texts), self.n_features
        if self._keyed:
            pairs = [self._char_pairs(texts)]
            if self.config.words and self.tokenizer is not None:
                pairs.append(self._word_pairs(texts))
        else:  # n-grams longer than 3 have no integer key: count the analysed strings
            counts = [(row * n_features + idx, c) for row, t in enumerate(texts)
                      for idx, c in self.reference_counts(t, featurised=True).items()]
            pairs = [np.repeat(np.array([k for k, _ in counts], dtype=np.int64), [c for _, c in counts])]
        codes, tf = np.unique(np.concatenate(pairs), return_counts=True)
        rows, indices = np.divmod(codes, n_features)
        weights = (1.0 + np.log(tf)) * self.idf[indices]
        norms = np.sqrt(np.bincount(rows, weights * weights, minlength=n_rows))
        weights /= norms[rows]
        if states is not None and self.uses_rule_states:
            rows, indices, weights = self._add_states(rows, indices, weights, states)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        return indptr, indices, weights.astype(np.float32)

    def _transform_single(self, text: str, states) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``transform_rows`` of one feature text, by the compiled path when it is built.

        A single ticket is the latency-critical call of the service. The compiled path does
        in one call what the numpy path does in some thirty, each slowed by the caches the
        rest of a scoring call has cleared; both equal the batch path's row exactly (tested).
        """
        if self._compiled is None or len(text) >= _LOG_TF_SIZE:
            return self._transform_single_numpy(text, states)
        words = self.tokenizer.cut(text) if self.config.words and self.tokenizer is not None else []
        capacity = 3 * len(text) + 2 * len(words) + 1
        indices, weights = np.empty(capacity, dtype=np.int64), np.empty(capacity, dtype=np.float32)
        n = _featurize.featurize_one(text, words, self.config.char_ngram_min, self.config.char_ngram_max,
                                     self.config.word_bigrams, *self._compiled, indices, weights)
        return self._single_row(indices[:n], weights[:n], states)

    def _transform_single_numpy(self, text: str, states) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``transform_rows`` of one feature text in numpy: no row bookkeeping, a third fewer
        numpy calls than the batch path."""
        parts = [self._char_indices(self._char_keys([text])[0])]
        if self.config.words and self.tokenizer is not None:
            words = self._cut_words(text)
            index = np.fromiter(map(self._words.get, words, repeat(-1)), dtype=np.int64, count=len(words))
            parts.append(index[index >= 0])
        indices, tf = np.unique(np.concatenate(parts), return_counts=True)
        weights = (1.0 + np.log(tf)) * self.idf[indices]
        if len(indices):
            weights /= np.sqrt(np.bincount(np.zeros(len(indices), dtype=np.int64), weights * weights)[0])
        return self._single_row(indices, weights, states)

    def _single_row(self, indices: np.ndarray, weights: np.ndarray, states) -> tuple[np.ndarray, ...]:
        """One text's CSR parts from its normalised text features, its known rule states merged in."""
        if states is not None and self.uses_rule_states:
            _, indices, weights = self._add_states(np.zeros(len(indices), dtype=np.int64), indices, weights, [states])
        return np.array([0, len(indices)], dtype=np.int64), indices, weights.astype(np.float32, copy=False)

    def _char_keys(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        return char_ngram_keys(texts, self.config.char_ngram_min, self.config.char_ngram_max)

    def _char_indices(self, keys: np.ndarray) -> np.ndarray:
        """Feature index of every in-vocabulary key of one text (binary search over sorted queries,
        which keeps it cache-friendly)."""
        if not len(self._keys) or not len(keys):
            return np.zeros(0, dtype=np.int64)
        keys = np.sort(keys)
        pos = np.searchsorted(self._keys, keys)
        pos[pos == len(self._keys)] = 0
        return self._key_index[pos[self._keys[pos] == keys]]

    def _char_pairs(self, texts: list[str]) -> np.ndarray:
        """``row * n_features + index`` of every in-vocabulary character n-gram occurrence."""
        keys, rows = self._char_keys(texts)  # several texts: single ones take _transform_single
        if not len(keys) or not len(self._keys):
            return np.zeros(0, dtype=np.int64)
        if len(keys) >= _TABLE_MIN_QUERIES:
            index = self._table.lookup(keys)
            hit = index >= 0
            return rows[hit] * self.n_features + index[hit]
        pos = np.searchsorted(self._keys, keys)
        pos[pos == len(self._keys)] = 0
        hit = self._keys[pos] == keys
        return rows[hit] * self.n_features + self._key_index[pos[hit]]

    def _add_states(self, rows, indices, weights, states):
        """The text features with each row's known rule states merged in, indices ascending."""
        found = [(row, self._states[s]) for row, row_states in enumerate(states)
                 for s in row_states if s in self._states]
        if not found:
            return rows, indices, weights
        extra = np.array(found, dtype=np.int64)
        rows = np.concatenate([rows, extra[:, 0]])
        indices = np.concatenate([indices, extra[:, 1]])
        weights = np.concatenate([weights, np.full(len(extra), self.config.rule_states)])
        order = np.argsort(rows * self.n_features + indices, kind="stable")
        return rows[order], indices[order], weights[order]

    def _cut_words(self, text: str) -> list[str]:
        """The word features of one text: jieba words, plus ``a b`` bigrams when configured."""
        cut = self.tokenizer.cut(text)
        if self.config.word_bigrams:
            cut = [w for w in cut if w != " "]
            cut += [f"{a} {b}" for a, b in zip(cut, cut[1:])]
        return cut

    def _word_pairs(self, texts: list[str]) -> np.ndarray:
        """``row * n_features + index`` of every in-vocabulary word (and word bigram) occurrence.

        The space token jieba emits is never in the vocabulary, so it needs no filter
        except when forming bigrams.
        """
        words: list[str] = []
        lengths: list[int] = []
        for text in texts:
            cut = self._cut_words(text)
            words += cut
            lengths.append(len(cut))
        index = np.fromiter(map(self._words.get, words, repeat(-1)), dtype=np.int64, count=len(words))
        rows = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        hit = index >= 0
        return rows[hit] * self.n_features + index[hit]

    def transform(self, normalized_texts, states=None) -> "scipy.sparse.csr_matrix":  # noqa: F821
        """A CSR matrix of all texts (used by training and evaluation)."""
        from scipy import sparse

        indptr, indices, weights = self.transform_rows(list(normalized_texts), states)
        return sparse.csr_matrix((weights, indices, indptr), shape=(len(indptr) - 1, self.n_features))

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "n_features": self.n_features}


def frequent_first(vocabulary: dict[str, int], idf: np.ndarray) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """A vocabulary and IDF renumbered most frequent first, and the renumbering (``order[new] == old``).

    A bundle numbers features by their string; a loaded model renumbers them so that the
    weight rows every ticket touches (common characters and words) sit together in memory
    rather than spread over the whole table. IDF falls as document frequency rises, so it
    gives the order; rule states (IDF 1) come first.
    """
    order = np.argsort(idf, kind="stable")
    new_index = np.empty(len(order), dtype=np.int64)
    new_index[order] = np.arange(len(order))
    return {gram: int(new_index[i]) for gram, i in vocabulary.items()}, idf[order], order


def fit_featurizer(normalized_texts, config: FeatureConfig, tokenizer: WordTokenizer | None,
                   states=None) -> Featurizer:
    """Choose the vocabulary (document frequency >= min_df, most frequent first) and IDF.

    Rule states (one set per text, when given and ``config.rule_states`` > 0) seen in at
    least ``min_df`` texts join the vocabulary beyond ``max_features``, with IDF 1.
    """
    texts = [feature_text(t, config.text_view) for t in normalized_texts]
    n_docs = len(texts)
    df = document_frequencies(texts, config, tokenizer)
    kept = [(g, c) for g, c in df.items() if c >= config.min_df]
    kept.sort(key=lambda gc: (-gc[1], gc[0]))
    kept = kept[:config.max_features]
    if states is not None and config.rule_states > 0:
        state_df: dict[str, int] = {}
        for row_states in states:
            for state in row_states:
                state_df[state] = state_df.get(state, 0) + 1
        kept += [(RULE_PREFIX + st, c) for st, c in state_df.items() if c >= config.min_df]
    kept.sort(key=lambda gc: gc[0])
    vocabulary = {g: i for i, (g, _) in enumerate(kept)}
    counts = np.array([c for _, c in kept], dtype=np.float64)
    idf = np.log((1.0 + n_docs) / (1.0 + counts)) + 1.0
    idf[[i for i, (g, _) in enumerate(kept) if g.startswith(RULE_PREFIX)]] = 1.0
    return Featurizer(config=config, vocabulary=vocabulary, idf=idf, tokenizer=tokenizer)



def document_frequencies(texts: list[str], config: FeatureConfig, tokenizer: WordTokenizer | None) -> Counter:
    """In how many of the feature texts each feature string of ``analyze`` occurs."""
    return Counter(gram for text in texts for gram in set(analyze(text, config, tokenizer)))
