import json
import threading
from pathlib import Path

import pytest

from triage.tokenize import WordTokenizer, read_userdict

CORPUS = Path(__file__).resolve().parent.parent / "datasets" / "corpus" / "dev.jsonl"


def _texts(n=300):
    with open(CORPUS, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for _, line in zip(range(n), fh)]


def test_user_dictionary_words_are_kept_whole():
    tok = WordTokenizer(read_userdict())
    assert "电梯困人" in tok.cut("客户反映电梯困人请尽快处理")
    assert "携号转网" in tok.cut("我要办理携号转网")


def test_rjieba_and_jieba_segment_the_corpus_alike():
    pytest.importorskip("jieba")
    pytest.importorskip("rjieba")
    words = read_userdict()
    fast, ref = WordTokenizer(words, "rjieba"), WordTokenizer(words, "jieba")
    texts = _texts()
    assert [fast.cut(t) for t in texts] == [ref.cut(t) for t in texts]


def test_tokenizer_is_deterministic_across_threads():
    tok = WordTokenizer(read_userdict())
    texts = _texts(100)
    expected = [tok.cut(t) for t in texts]
    results, errors = [], []

    def work():
        try:
            results.append([tok.cut(t) for t in texts])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == expected for r in results)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError):
        WordTokenizer([], backend="nope")


def test_a_memoised_tokenizer_cuts_as_the_plain_one_and_hands_out_fresh_lists():
    plain, memo = WordTokenizer(read_userdict()), WordTokenizer(read_userdict(), memo=True)
    text = "小区停水一整天了，物业电话打不通"
    first = memo.cut(text)
    assert first == plain.cut(text) == memo.cut(text)
    first.append("改")
    assert memo.cut(text) == plain.cut(text)
