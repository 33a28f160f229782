import json

import pytest

from triage.errors import TaxonomyError
from triage.taxonomy import load_taxonomy

CATEGORIES = ["product_quality", "service_attitude", "delivery", "billing", "facility_failure", "network",
              "safety_hazard", "environment", "marketing", "privacy_security", "business_process", "other"]
DEPARTMENTS = ["customer_service", "finance", "engineering", "network_ops", "logistics", "quality",
               "marketing", "security", "legal_compliance"]


def test_default_codes_are_the_fixed_ones():
    tax = load_taxonomy()
    assert tax.labels("category") == CATEGORIES
    assert tax.labels("department") == DEPARTMENTS
    assert tax.labels("urgency") == ["same_day", "within_24h", "normal"]
    assert tax.labels("sentiment") == ["positive", "neutral", "negative", "angry"]
    assert sorted(tax.flags) == sorted(["media", "legal", "regulator", "police", "repeat_complaint",
                                        "compensation_demand", "injury", "self_harm_threat"])


def test_every_code_has_a_chinese_name_and_definition():
    tax = load_taxonomy()
    for head, spec in tax.heads.items():
        for code, entry in spec["labels"].items():
            assert entry["zh"] and entry["definition"], (head, code)
    for code in CATEGORIES:
        assert tax.default_department(code) in DEPARTMENTS


def test_a_deployment_can_override_the_taxonomy(tmp_path):
    path = tmp_path / "tax.json"
    path.write_text(json.dumps({"heads": {"category": {"labels": {
        "a": {"zh": "甲", "definition": "x", "default_department": "d1"}}},
        "department": {"labels": {"d1": {"zh": "部", "definition": "y"}}}}}), "utf-8")
    tax = load_taxonomy(path)
    assert tax.labels("category") == ["a"] and tax.display_name("category", "a") == "甲"


@pytest.mark.parametrize("content", ["not json", "[]", '{"heads": {"x": {"labels": {}}}}',
                                     '{"heads": {"category": {"labels": {"a": {"default_department": "zz"}}},'
                                     ' "department": {"labels": {"d": {}}}}}'])
def test_a_broken_taxonomy_is_refused(tmp_path, content):
    path = tmp_path / "tax.json"
    path.write_text(content, "utf-8")
    with pytest.raises(TaxonomyError):
        load_taxonomy(path)
