"""Text normalisation and PII masking.

``normalize_text`` maps every character of the input to at most one output character,
so that evidence found in the normalised text points back into the original with the
same offsets. Traditional characters become simplified (OpenCC ``t2s``), full-width
forms become half-width, control characters and odd whitespace become a space.
"""

from __future__ import annotations

import re
import threading
import unicodedata

from triage.errors import InvalidTicketError

DEFAULT_MAX_CHARS = 5000

_FULLWIDTH_OFFSET = 0xFEE0
_ZERO_WIDTH = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"}

_converter = None
_traditional: frozenset[str] = frozenset()
_converter_lock = threading.Lock()
_CJK_RANGES = ((0x2E80, 0x2FDF), (0x3000, 0x303F), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
               (0xFE30, 0xFE4F), (0x20000, 0x2A6DF), (0x2A700, 0x2EBEF), (0x2F800, 0x2FA1F))


def _t2s():
    """The OpenCC t2s converter, built once, with the set of characters it changes on their own."""
    global _converter, _traditional
    if _converter is None:
        with _converter_lock:
            if _converter is None:
                import opencc

                converter = opencc.OpenCC("t2s")
                chars = [chr(c) for lo, hi in _CJK_RANGES for c in range(lo, hi + 1)]
                converted = converter.convert("\n".join(chars)).split("\n")
                _traditional = frozenset(c for c, out in zip(chars, converted) if c != out)
                _converter = converter
    return _converter


def _halfwidth_char(ch: str) -> str:
    code = ord(ch)
    if 0xFF01 <= code <= 0xFF5E:
        return chr(code - _FULLWIDTH_OFFSET)
    if code == 0x3000:
        return " "
    if ch == "\n":
        return ch
    if ch in _ZERO_WIDTH:
        return " "
    if code < 32 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029\u00a0":
        return " "
    return ch


_HALFWIDTH_TABLE = {i: _halfwidth_char(chr(i)) for i in list(range(0, 0xA1)) + list(range(0xFF01, 0xFF5F)) + [0x3000, 0x2028, 0x2029, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF]}


def to_simplified(text: str) -> str:
    """Traditional to simplified, keeping one output character per input character.

    A text with no character that converts on its own is returned as it is: OpenCC's phrase
    table also rewrites some simplified text (打坏 became 打坯), and most tickets are
    simplified already, so this is both more faithful and faster.
    """
    cc = _t2s()
    if _traditional.isdisjoint(text):
        return text
    converted = cc.convert(text)
    if len(converted) == len(text):
        return converted
    # A phrase mapping changed the length; convert character by character instead.
    return "".join(c if len(c) == 1 else ch for ch, c in ((ch, cc.convert(ch)) for ch in text))


def normalize_text(text: str) -> str:
    """Simplified, half-width text of the same length as ``text``; case is kept."""
    return to_simplified(text.translate(_HALFWIDTH_TABLE))


_MASKED = re.compile(r"\d*\*{2,}[\d*]*")
_LONG_NUMBER = re.compile(r"\d{6,}")
_FORM_NOISE = re.compile(r"@~|[#＃]{2,}|[-=_~]{3,}")
_FORM_FIELD = re.compile(r"(主活动名称|活动名称|工单号|联系电话|联系方式|受理号码|投诉号码|业务号码|来电号码|联系人)[:：]?")
_FORM_NOISE_V1 = re.compile(r"@~|\*{2,}|[#＃]{2,}|[-=_~]{3,}")
_FORM_FIELD_V1 = re.compile(r"(主活动名称|活动名称|工单号|联系电话|受理号码|投诉号码|业务号码|来电号码|联系人)[:：]")
FEATURE_VIEW = 2
_SURROGATE = re.compile("[\ud800-\udfff]")
_DIGITS = re.compile(r"\d")
_SPACES = re.compile(r"\s+")
_CJK_GAP = re.compile(r"(?<=[\u3400-\u9fff,.!?;:、。])\s+(?=[\u3400-\u9fff,.!?;:、。])")
_CJK_SPLIT = re.compile(r"[\u3400-\u9fff]\s+(?=[\u3400-\u9fff])")
_CJK_PAIR = re.compile(r"[\u3400-\u9fff](?=\s*[\u3400-\u9fff])")
SPACED_OUT_SHARE = 0.3


def feature_text(normalized: str, view: int = FEATURE_VIEW) -> str:
    """The view of a normalised text the models see.

    Field names (联系电话:, 工单号) and form separators (``@~``) carry no meaning for
    routing and differ between ticket systems, so they are dropped; a masked number
    (``******``, ``138****1234``) or a long digit run (phone, order, ID numbers) becomes one
    ``#`` marker, whatever its digits; other digits are folded to ``0`` so that amounts,
    dates and room numbers generalise; spaced-out Chinese is joined (``join_spaced_out``).
    A bundle records the view it was trained with (``FeatureConfig.text_view``): view 1,
    of bundles made before 4 December 2026, turned separators into the marker too, read a
    partly masked or unmasked phone number as digits and did not join spaced-out text.
    """
    if view == 1:
        text = _FORM_FIELD_V1.sub(" ", normalized)
        text = _FORM_NOISE_V1.sub(" # ", text)
        return _SPACES.sub(" ", _DIGITS.sub("0", text.lower())).strip()
    if view != 2:
        raise ValueError(f"unknown feature text view {view!r}")
    text = _FORM_FIELD.sub(" ", normalized)
    if "*" in text:
        text = _MASKED.sub(" # ", text)
    if _DIGITS.search(text):
        text = _DIGITS.sub("0", _LONG_NUMBER.sub(" # ", text))
    text = _FORM_NOISE.sub(" ", text.lower())
    return _SPACES.sub(" ", join_spaced_out(text)).strip()


def join_spaced_out(text: str) -> str:
    """Close the gaps of a text whose Chinese is spaced out (小区 停水 两天 了, 停 水 了).

    Pre-segmented exports, speech transcripts and some forms put a space between words or
    characters; the n-grams of such a text match nothing the models learnt. A space between
    two Chinese characters (or a character and a punctuation mark) is dropped only when at
    least ``SPACED_OUT_SHARE`` of the character pairs are split so: in ordinary text a space between clauses (上周就说帮我查
    到现在没消息) is a pause worth keeping.
    """
    return _CJK_GAP.sub("", text) if spaced_out_gaps(text) else text


def spaced_out_gaps(text: str) -> list[tuple[int, int]] | None:
    """The whitespace spans ``join_spaced_out`` drops, or None when the text is not spaced out."""
    if text.count(" ") < 3:
        return None
    gaps = len(_CJK_SPLIT.findall(text))
    if gaps >= 3 and gaps >= SPACED_OUT_SHARE * len(_CJK_PAIR.findall(text)):
        return [m.span() for m in _CJK_GAP.finditer(text)]
    return None


def validate_text(text, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Return ``text`` if it can be scored, otherwise raise InvalidTicketError."""
    if text is None:
        raise InvalidTicketError("ticket text is missing", code="missing_text")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidTicketError("ticket text is not valid UTF-8", code="bad_encoding") from None
    if not isinstance(text, str):
        raise InvalidTicketError(f"ticket text must be a string, not {type(text).__name__}", code="bad_type")
    if len(text) > max_chars:
        raise InvalidTicketError(
            f"ticket text has {len(text)} characters; the limit is {max_chars}", code="text_too_long")
    if not text.strip() or all(unicodedata.category(c)[0] in "CZ" for c in text):
        raise InvalidTicketError("ticket text is empty", code="empty_text")
    if _SURROGATE.search(text):
        raise InvalidTicketError("ticket text contains unpaired surrogates", code="bad_encoding")
    return text


_PII_PATTERNS = [
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    ("id_card", re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")),
    ("bank_card", re.compile(r"(?<!\d)(?:\d[ -]?){15,18}\d(?!\d)")),
    ("mobile", re.compile(r"(?<!\d)(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)")),
    ("landline", re.compile(r"(?<!\d)0\d{2,3}[ -]?\d{7,8}(?!\d)")),
]


def mask_pii(text: str) -> str:
    """Replace phone numbers, ID-card numbers, bank cards and e-mails with a tag.

    Use it on anything that is logged or stored outside the ticket system.
    """
    for name, pattern in _PII_PATTERNS:
        text = pattern.sub(f"<{name}>", text)
    return text
