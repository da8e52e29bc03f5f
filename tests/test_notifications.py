"""Notification templates (node/data/notifications.json) rendered by node/domain/notifications.py."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.domain.errors import DomainError
from node.domain.identifiers import make_id_number
from node.domain.notifications import (
    LANGUAGES,
    TEMPLATES_PATH,
    _load,
    mask_name,
    pick_language,
    render,
    template_ids,
    templates,
)
from sandboxes.sms.server import load_templates

CASE = "430903000000-20261201-7"
ID_NUMBER = make_id_number("430903", date(1990, 3, 7), 123)
SAMPLES: dict[str, dict[str, Any]] = {
    "case_accepted": {"name": "张三丰", "matter": "出生登记", "case_no": CASE, "due_date": date(2026, 12, 21)},
    "one_time_notice": {"name": "张三丰", "matter": "出生登记", "case_no": CASE, "materials": ["出生医学证明"]},
    "supplement_requested": {"name": "张三丰", "case_no": CASE, "materials": ["结婚证"], "due_date": "2026-12-15"},
    "decision_approved": {"name": "张三丰", "matter": "出生登记", "case_no": CASE},
    "decision_rejected": {"name": "张三丰", "matter": "出生登记", "case_no": CASE, "reason": "不符合申请条件"},
    "result_ready": {"name": "张三丰", "case_no": CASE, "place": "赫山区政务服务中心3号窗口"},
    "result_posted": {"name": "张三丰", "case_no": CASE, "waybill": "SX2612010000011"},
    "deadline_extended": {"name": "张三丰", "case_no": CASE, "due_date": "2027-01-05", "reason": "需现场核查"},
    "login_code": {"code": "042917", "minutes": 5},
    "registration_code": {"code": "042917", "minutes": 5},
}


def test_every_step_the_applicant_should_know_has_a_template_in_both_languages() -> None:
    assert set(template_ids()) == set(SAMPLES)
    for template_id, params in SAMPLES.items():
        zh, en = (render(template_id, params, language) for language in LANGUAGES)
        assert zh.text.startswith("【通办】") and en.text.startswith("[Tongban]")
        assert re.search(r"[\u4e00-\u9fff]", zh.title) and en.title.isascii()
        assert zh.sms_code != en.sms_code
        assert "{" not in zh.text and "{" not in en.text


def test_a_message_names_the_case_the_materials_and_the_dates() -> None:
    notice = render("one_time_notice", {**SAMPLES["one_time_notice"], "materials": ["出生医学证明", "居民户口簿"]})
    assert "出生医学证明、居民户口簿" in notice.text and CASE in notice.text and "一次性告知" in notice.text
    english = render("supplement_requested", SAMPLES["supplement_requested"], "en")
    assert "15 Dec 2026" in english.text
    assert "2026年12月21日" in render("case_accepted", SAMPLES["case_accepted"]).text
    assert "SX2612010000011" in render("result_posted", SAMPLES["result_posted"]).text
    rejected = render("decision_rejected", SAMPLES["decision_rejected"], "en")
    assert "不符合申请条件" in rejected.text and "refused" in rejected.text


def test_names_are_masked_and_id_or_phone_numbers_never_appear_in_full() -> None:
    assert [mask_name(n) for n in ("张三", "张三丰", "欧阳娜娜", "Li Lei")] == ["张**", "张**", "欧**", "L**"]
    message = render(
        "deadline_extended",
        {**SAMPLES["deadline_extended"], "reason": f"需核查身份证{ID_NUMBER}及电话13812345678"},
    )
    assert "张**" in message.text and "三丰" not in message.text
    assert ID_NUMBER not in message.text and ID_NUMBER[:6] + "*" * 11 + ID_NUMBER[-1:] in message.text
    assert "13812345678" not in message.text and "138****5678" in message.text
    glued = render("decision_rejected", {**SAMPLES["decision_rejected"], "reason": f"编号99{ID_NUMBER}7"})
    assert ID_NUMBER not in glued.text and not re.search(r"[0-9]{11}", glued.params["reason"])
    assert message.params["name"] == "张**"


_DIGITS_OR_TEXT = st.text(alphabet=st.sampled_from("0123456789Xx 审核张三、，abc\n"), min_size=1, max_size=120)


@given(reason=_DIGITS_OR_TEXT, place=_DIGITS_OR_TEXT, materials=st.lists(_DIGITS_OR_TEXT, min_size=1, max_size=12))
def test_free_text_never_carries_a_whole_id_or_phone_number(reason: str, place: str, materials: list[str]) -> None:
    for template_id, field, params in (
        ("decision_rejected", "reason", {**SAMPLES["decision_rejected"], "reason": reason}),
        ("result_ready", "place", {**SAMPLES["result_ready"], "place": place}),
        ("one_time_notice", "materials", {**SAMPLES["one_time_notice"], "materials": materials}),
    ):
        try:
            message = render(template_id, params)
        except DomainError as refused:
            assert refused.code == "notification_param_invalid"  # e.g. only blanks
            continue
        assert not re.search(r"[0-9]{11}", message.params[field])  # no ID, phone or longer run survives
        assert len(message.text) <= 300 and "\n" not in message.text


def test_long_free_text_is_cut_and_long_material_lists_are_summarised() -> None:
    message = render("decision_rejected", {**SAMPLES["decision_rejected"], "reason": "理" * 500})
    assert "理" * 59 + "…" in message.params["reason"] and len(message.params["reason"]) == 60
    many = [f"材料{i:02d}" for i in range(20)]
    zh = render("one_time_notice", {**SAMPLES["one_time_notice"], "materials": many})
    assert zh.params["materials"].endswith("等20项") and "材料07" in zh.params["materials"]
    en = render("one_time_notice", {**SAMPLES["one_time_notice"], "materials": many}, "en")
    assert en.params["materials"].endswith(" and 12 more")
    assert all(len(v) <= 150 for v in (*zh.params.values(), *en.params.values()))  # the gateway's bound


@pytest.mark.parametrize(
    ("template_id", "params", "code"),
    [
        ("no_such_step", {}, "notification_template_unknown"),
        ("login_code", {"code": "042917"}, "notification_params_mismatch"),
        ("login_code", {"code": "042917", "minutes": 5, "name": "张三"}, "notification_params_mismatch"),
        ("login_code", {"code": "42917", "minutes": 5}, "notification_param_invalid"),
        ("login_code", {"code": "０４２９１７", "minutes": 5}, "notification_param_invalid"),
        ("login_code", {"code": "042917", "minutes": 0}, "notification_param_invalid"),
        ("login_code", {"code": "042917", "minutes": True}, "notification_param_invalid"),
        ("result_posted", {"name": "张三", "case_no": CASE, "waybill": "x"}, "notification_param_invalid"),
        ("case_accepted", {**SAMPLES["case_accepted"], "due_date": "2026-13-01"}, "notification_param_invalid"),
        ("case_accepted", {**SAMPLES["case_accepted"], "case_no": "a b"}, "notification_param_invalid"),
        ("case_accepted", {**SAMPLES["case_accepted"], "name": "张\n三"}, "notification_param_invalid"),
        ("case_accepted", {**SAMPLES["case_accepted"], "name": " "}, "notification_name_empty"),
        ("case_accepted", {**SAMPLES["case_accepted"], "matter": ""}, "notification_param_invalid"),
        ("one_time_notice", {**SAMPLES["one_time_notice"], "materials": []}, "notification_param_invalid"),
        ("one_time_notice", {**SAMPLES["one_time_notice"], "materials": [3]}, "notification_param_invalid"),
    ],
)
def test_bad_params_are_refused_with_a_bilingual_reason(template_id: str, params: dict[str, Any], code: str) -> None:
    with pytest.raises(DomainError) as refused:
        render(template_id, params)
    assert refused.value.code == code
    assert re.search(r"[\u4e00-\u9fff]", refused.value.message_zh) and refused.value.message_en.isascii()


def test_an_unknown_language_is_refused() -> None:
    with pytest.raises(DomainError) as refused:
        render("login_code", SAMPLES["login_code"], "fr")
    assert refused.value.code == "notification_language_unknown"


@pytest.mark.parametrize(
    ("preferred", "accept", "expected"),
    [
        (None, None, "zh-CN"),
        ("en", "zh-CN", "en"),
        ("zh-CN", "en", "zh-CN"),
        (None, "en-GB,en;q=0.9", "en"),
        (None, "fr-FR, en;q=0.5, zh;q=0.8", "zh-CN"),
        (None, "fr-FR, de;q=0.5", "zh-CN"),
        ("fr", "en;q=0.1", "en"),
        (None, "zh-TW", "zh-CN"),
        (None, "en;q=abc, zh;q=0.3", "zh-CN"),
        (None, "x" * 1000, "zh-CN"),
    ],
)
def test_the_language_follows_the_account_then_the_browser(preferred: str | None, accept: str | None,
                                                            expected: str) -> None:  # fmt: skip
    assert pick_language(preferred, accept) == expected


def test_the_sms_gateway_registers_exactly_the_same_texts() -> None:
    registered = load_templates(TEMPLATES_PATH)
    for template_id, params in SAMPLES.items():
        for language in LANGUAGES:
            message = render(template_id, params, language)
            entry = registered[message.sms_code]
            assert entry["params"] == sorted(message.params)
            assert re.sub(r"\{(\w+)\}", lambda m, p=message.params: p[m.group(1)], entry["text"]) == message.text


def test_a_broken_template_file_is_refused_at_load(tmp_path: Path) -> None:
    raw = json.loads(TEMPLATES_PATH.read_text("utf-8"))
    raw["templates"]["login_code"]["text"]["en"] = "[Tongban] Your code is {code}."  # {minutes} forgotten
    broken = tmp_path / "notifications.json"
    broken.write_text(json.dumps(raw, ensure_ascii=False), "utf-8")
    with pytest.raises(ValueError, match="placeholders"):
        _load(broken)
    raw = json.loads(TEMPLATES_PATH.read_text("utf-8"))
    raw["templates"]["login_code"]["sms_code"]["en"] = raw["templates"]["registration_code"]["sms_code"]["en"]
    broken.write_text(json.dumps(raw, ensure_ascii=False), "utf-8")
    with pytest.raises(ValueError, match="used twice"):
        _load(broken)
    assert len(templates()) == len(SAMPLES)
