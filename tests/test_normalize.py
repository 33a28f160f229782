import pytest

from triage.errors import InvalidTicketError
from triage.normalize import feature_text, mask_pii, normalize_text, spaced_out_gaps, validate_text


@pytest.mark.parametrize("raw, expected", [
    ("電梯壞了，裡面有人", "电梯坏了,里面有人"),
    ("ＡＰＰ打不开！！", "APP打不开!!"),
    ("停电\t了\x00", "停电 了 "),
    ("没水了😡", "没水了😡"),
])
def test_normalize_text_simplifies_and_halves_width(raw, expected):
    assert normalize_text(raw) == expected


def test_normalize_text_keeps_one_character_per_input_character():
    raw = "客戶來電反映：瓦斯味很重，請儘快處理！＠～"
    assert len(normalize_text(raw)) == len(raw)


def test_feature_text_folds_digits_and_form_noise():
    text = normalize_text("工单号:******@~客户反映3月9日流量费180元")
    out = feature_text(text)
    assert "*" not in out and "@~" not in out and "工单号" not in out
    assert "0月0日" in out and "000元" in out


@pytest.mark.parametrize("bad, code", [
    ("", "empty_text"), ("   \n\t ", "empty_text"), (None, "missing_text"), (42, "bad_type"),
    (b"\xff\xfe", "bad_encoding"), ("x" * 5001, "text_too_long"), ("\u200b\u200b", "empty_text"),
])
def test_validate_text_rejects_bad_input_with_a_code(bad, code):
    with pytest.raises(InvalidTicketError) as err:
        validate_text(bad)
    assert err.value.code == code


def test_validate_text_accepts_utf8_bytes_and_custom_limit():
    assert validate_text("停电".encode("utf-8")) == "停电"
    with pytest.raises(InvalidTicketError):
        validate_text("停电了", max_chars=2)


@pytest.mark.parametrize("raw, tag", [
    ("电话13812345678请回电", "<mobile>"), ("座机010-62345678", "<landline>"),
    ("身份证11010519491231002X", "<id_card>"), ("卡号6222 0212 3456 7890 123", "<bank_card>"),
    ("邮箱 zhang.san@example.com", "<email>"),
])
def test_mask_pii_replaces_personal_numbers(raw, tag):
    masked = mask_pii(raw)
    assert tag in masked
    assert not any(ch.isdigit() for ch in masked.split(tag)[0][-4:])


def test_mask_pii_leaves_short_numbers_alone():
    assert mask_pii("3栋2单元1101室，停电3小时，打了110") == "3栋2单元1101室，停电3小时，打了110"


@pytest.mark.parametrize("spaced, joined", [
    ("小区 停水 两天 了 , 物业 不管", "小区停水两天了,物业不管"),   # pre-segmented words
    ("停 水 了 , 快 来 人", "停水了,快来人"),                      # one character at a time
])
def test_feature_text_closes_the_gaps_of_spaced_out_chinese(spaced, joined):
    assert feature_text(spaced) == feature_text(joined) == joined


def test_feature_text_keeps_a_pause_between_clauses():
    text = "上周就说帮我查 到现在没消息 我的包裹还在不在啊"
    assert feature_text(text) == text
    assert spaced_out_gaps(text) is None


@pytest.mark.parametrize("text", ["话费被多扣了，联系电话:138****1234", "话费被多扣了，联系电话13812345678",
                                  "话费被多扣了，联系电话：******"])
def test_feature_text_reads_any_contact_number_as_one_marker(text):
    assert feature_text(normalize_text(text)) == "话费被多扣了, #"


def test_feature_text_view_1_is_kept_for_older_bundles():
    assert feature_text("话费被多扣了 联系电话:138****1234", 1) == "话费被多扣了 000 # 0000"
    assert feature_text("停 水 了 , 快 来 人", 1) == "停 水 了 , 快 来 人"
    with pytest.raises(ValueError, match="view"):
        feature_text("停水", 3)


def test_simplified_text_is_left_as_written():
    """OpenCC's phrase table rewrites some simplified text (打坏 -> 打坯); a text with no
    traditional character is not converted at all."""
    assert normalize_text("空开被雷打坏了，当场跳闸") == "空开被雷打坏了,当场跳闸"
    assert normalize_text("電錶被雷打壞了") == "电表被雷打坏了"
