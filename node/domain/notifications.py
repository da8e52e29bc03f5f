"""Messages to applicants: the templates of node/data/notifications.json, rendered with bounded, masked params.

This module owns choosing the language of a message, checking and shaping every parameter by its kind
(a name becomes "张**", an ID number or phone number inside free text is masked, lengths are capped) and
rendering the text the phone and the hall's message box show. The SMS provider gets the template's
registered code and the same shaped params, so what it sends is exactly what was rendered here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from node.domain.errors import DomainError
from node.domain.identifiers import mask_id_number

__all__ = [
    "LANGUAGES",
    "RenderedMessage",
    "mask_name",
    "mask_phone",
    "pick_language",
    "render",
    "template_ids",
    "templates",
]

TEMPLATES_PATH = Path(__file__).resolve().parents[1] / "data" / "notifications.json"
LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"
MAX_TEXT = 300  # a long SMS is cut into 67-character parts; five parts is the most we ever send

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
# A run of 11 or more digits in free text may be an ID number (18, the last maybe X), a phone number
# (11) or either of them glued to other digits: every such run is masked.
_LONG_DIGITS = re.compile(r"[0-9]{10,}[0-9Xx]", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_CASE_NO = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,39}$", re.ASCII)
_WAYBILL = re.compile(r"^[A-Z]{2}[0-9]{10,20}$", re.ASCII)
_CODE = re.compile(r"^[0-9]{6}$", re.ASCII)
_KINDS = frozenset({"person_name", "matter", "case_no", "date", "materials", "reason", "place", "waybill", "code",
                    "minutes"})  # fmt: skip
_TEXT_LIMITS = {"matter": 40, "reason": 60, "place": 40}
_MAX_MATERIALS = 8
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MATERIAL_LIMIT = 30
_MATERIALS_TOTAL = 120


@dataclass(frozen=True)
class Template:
    template_id: str
    params: Mapping[str, str]  # placeholder → kind
    sms_code: Mapping[str, str]  # language → code registered with the SMS provider
    title: Mapping[str, str]
    text: Mapping[str, str]


@dataclass(frozen=True)
class RenderedMessage:
    """One message ready to go: the provider template code and params, and the text they make."""

    template_id: str
    language: str
    sms_code: str
    params: Mapping[str, str]  # exactly what the SMS provider receives
    title: str  # the hall's message box shows title and text
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "template_id": self.template_id,
            "language": self.language,
            "sms_code": self.sms_code,
            "params": dict(self.params),
            "title": self.title,
            "text": self.text,
        }


def _invalid(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en)


def _load(path: Path) -> dict[str, Template]:
    raw = json.loads(path.read_text("utf-8"))
    if tuple(raw.get("languages", ())) != LANGUAGES:
        raise ValueError(f"{path}: languages must be {LANGUAGES}")
    loaded: dict[str, Template] = {}
    codes: set[str] = set()
    for template_id, entry in raw["templates"].items():
        params = dict(entry["params"])
        unknown = set(params.values()) - _KINDS
        if unknown:
            raise ValueError(f"{path}: template {template_id} uses unknown kinds {sorted(unknown)}")
        for field in ("sms_code", "title", "text"):
            if set(entry[field]) != set(LANGUAGES):
                raise ValueError(f"{path}: template {template_id} needs {field} in {LANGUAGES}")
        for language, text in entry["text"].items():
            if set(_PLACEHOLDER.findall(text)) != set(params):
                raise ValueError(f"{path}: template {template_id} ({language}) placeholders differ from its params")
        for code in entry["sms_code"].values():
            if code in codes:
                raise ValueError(f"{path}: SMS template code {code} is used twice")
            codes.add(code)
        loaded[template_id] = Template(template_id, params, entry["sms_code"], entry["title"], entry["text"])
    return loaded


@cache
def templates() -> Mapping[str, Template]:
    """The templates of node/data/notifications.json, checked once: placeholders, languages, unique codes."""
    return _load(TEMPLATES_PATH)


def template_ids() -> tuple[str, ...]:
    return tuple(templates())


# --- Masking -----------------------------------------------------------------------------------------------


def mask_name(name: str) -> str:
    """The first character and two stars, whatever the name's length ("张三丰" → "张**"): the surname is
    enough for a greeting, and a fixed length does not tell how long the name is."""
    stripped = name.strip()
    if not stripped:
        raise _invalid("notification_name_empty", "姓名为空", "the name is empty")
    return stripped[0] + "**"


def mask_phone(phone: str) -> str:
    """ "13800000000" → "138****0000"."""
    return phone[:3] + "****" + phone[-4:] if len(phone) == 11 else "*" * len(phone)


def _mask_run(run: str) -> str:
    if len(run) == 18:
        return mask_id_number(run)
    return run[:3] + "*" * (len(run) - 7) + run[-4:]  # an 11-digit phone becomes "138****5678"


def _mask_runs(text: str) -> str:
    return _LONG_DIGITS.sub(lambda m: _mask_run(m.group(0)), text)


def _clean_text(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(
            "notification_param_invalid", f"消息参数 {field} 应为非空文字", f"message parameter {field} must be text"
        )
    text = _mask_runs(" ".join(_CONTROL.sub(" ", value).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Params by kind ----------------------------------------------------------------------------------------


def _date(value: Any, field: str, language: str) -> str:
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            value = None
    if not isinstance(value, date):
        raise _invalid(
            "notification_param_invalid",
            f"消息参数 {field} 应为日期（YYYY-MM-DD）",
            f"message parameter {field} must be a date (YYYY-MM-DD)",
        )
    if language == "zh-CN":
        return f"{value.year}年{value.month}月{value.day}日"
    return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"  # not %b: that follows the process locale


def _materials(value: Any, field: str, language: str) -> str:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or isinstance(items, str | bytes) or not items:
        raise _invalid(
            "notification_param_invalid",
            f"消息参数 {field} 应为至少一项材料名称",
            f"message parameter {field} must name at least one material",
        )
    names = [_clean_text(item, field, _MATERIAL_LIMIT) for item in items]
    separator, more = ("、", "等{n}项") if language == "zh-CN" else ("; ", " and {n} more")
    shown = names[:_MAX_MATERIALS]
    while len(shown) > 1 and len(separator.join(shown)) > _MATERIALS_TOTAL:
        shown.pop()
    joined = separator.join(shown)
    if len(shown) < len(names):
        joined += more.format(n=len(names)) if language == "zh-CN" else more.format(n=len(names) - len(shown))
    return joined


def _shaped(kind: str, value: Any, field: str, language: str) -> str:
    if kind == "person_name":
        if not isinstance(value, str) or len(value) > 50 or _CONTROL.search(value):
            raise _invalid("notification_param_invalid", "姓名格式不正确", f"message parameter {field} is not a name")
        return mask_name(value)
    if kind in _TEXT_LIMITS:
        return _clean_text(value, field, _TEXT_LIMITS[kind])
    if kind == "materials":
        return _materials(value, field, language)
    if kind == "date":
        return _date(value, field, language)
    if kind == "minutes":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 60:
            raise _invalid(
                "notification_param_invalid", "有效分钟数应为1至60", f"message parameter {field} must be 1-60 minutes"
            )
        return str(value)
    pattern = {"case_no": _CASE_NO, "waybill": _WAYBILL, "code": _CODE}[kind]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _invalid(
            "notification_param_invalid", f"消息参数 {field} 格式不正确", f"message parameter {field} is malformed"
        )
    return value


def pick_language(preferred: str | None = None, accept_language: str | None = None) -> str:
    """The account's chosen language if we have it, else the best of an Accept-Language header, else zh-CN."""
    for candidate in _ranked(preferred, accept_language):
        tag = candidate.strip().lower()
        if tag == "*":
            return DEFAULT_LANGUAGE
        if tag == "zh" or tag.startswith(("zh-cn", "zh-hans", "zh-sg")):
            return "zh-CN"
        if tag == "en" or tag.startswith("en-"):
            return "en"
    return DEFAULT_LANGUAGE


def _ranked(preferred: str | None, accept_language: str | None) -> list[str]:
    ranked = [preferred] if isinstance(preferred, str) and len(preferred) <= 35 else []
    if isinstance(accept_language, str) and len(accept_language) <= 500:
        weighted: list[tuple[float, int, str]] = []
        for position, part in enumerate(accept_language.split(",")[:20]):
            tag, _, q = part.strip().partition(";")
            try:
                weight = float(q.strip()[2:]) if q.strip().startswith("q=") else 1.0
            except ValueError:
                weight = 0.0
            if tag and weight > 0:
                weighted.append((-weight, position, tag))
        ranked.extend(tag for _, _, tag in sorted(weighted))
    return ranked


def render(template_id: str, params: Mapping[str, Any], language: str = DEFAULT_LANGUAGE) -> RenderedMessage:
    """The message for one step, in ``language`` (zh-CN or en), from exactly the params the template names.

    Raises DomainError ``notification_template_unknown``, ``notification_language_unknown``,
    ``notification_params_mismatch`` (a param missing or one too many) or ``notification_param_invalid``.
    """
    template = templates().get(template_id)
    if template is None:
        raise _invalid("notification_template_unknown", "没有这个消息模板", "there is no such message template")
    if language not in LANGUAGES:
        raise _invalid("notification_language_unknown", "不支持该语言", "that language is not supported")
    if set(params) != set(template.params):
        raise _invalid(
            "notification_params_mismatch",
            f"消息模板 {template_id} 需要参数：{'、'.join(template.params)}",
            f"message template {template_id} takes exactly: {', '.join(template.params)}",
        )
    shaped = {field: _shaped(kind, params[field], field, language) for field, kind in template.params.items()}
    text = _PLACEHOLDER.sub(lambda m: shaped[m.group(1)], template.text[language])
    if len(text) > MAX_TEXT:
        raise _invalid("notification_too_long", "消息过长", "the message is too long")
    return RenderedMessage(template_id, language, template.sms_code[language], shaped, template.title[language], text)
