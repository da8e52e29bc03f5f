"""How codes read on the pages: roles, tiers, deadline flags, case actions, catalogue options, times.

Every label is a gettext message (Chinese source, English in the ``en`` catalogue), looked up in
the language of the request. Case states keep the labels of :class:`CaseState`, which the API also
returns in both languages.
"""

from __future__ import annotations

from datetime import datetime

from flask_babel import LazyString, lazy_gettext, lazy_pgettext

from node.domain.case import ACCEPTOR, ADMIN, APPROVER, OPS, SUPERVISOR, CaseState
from node.domain.errors import DomainError
from node.entrypoints.web.http import context
from node.entrypoints.web.i18n import lang
from node.service_layer.cases import CHINA
from tiers import Tier

ROLE_LABELS: dict[str, LazyString] = {
    ACCEPTOR: lazy_pgettext("role", "受理人员"),
    APPROVER: lazy_pgettext("role", "审批人员"),
    SUPERVISOR: lazy_pgettext("role", "监督人员"),
    OPS: lazy_pgettext("role", "运维人员"),
    ADMIN: lazy_pgettext("role", "管理员"),
    "citizen": lazy_pgettext("role", "申请人"),
}
TIER_LABELS: dict[Tier, LazyString] = {
    Tier.CITY: lazy_gettext("市"),
    Tier.COUNTY: lazy_gettext("县/区"),
    Tier.TOWNSHIP: lazy_gettext("乡/镇/街道"),
    Tier.VILLAGE: lazy_gettext("村/社区"),
}
FLAG_LABELS: dict[str, LazyString] = {
    "warning": lazy_pgettext("flag", "预警"),
    "yellow": lazy_pgettext("flag", "黄牌"),
    "red": lazy_pgettext("flag", "红牌"),
}
# The levels of node.domain.events.EVALUATION_LEVELS.
EVALUATION_LABELS: dict[int, LazyString] = {
    1: lazy_gettext("非常满意"),
    2: lazy_gettext("满意"),
    3: lazy_gettext("基本满意"),
    4: lazy_gettext("不满意"),
    5: lazy_gettext("非常不满意"),
}
# In the order the case page offers them.
ACTION_LABELS: dict[str, LazyString] = {
    "receive": lazy_pgettext("action", "接收案件"),
    "approve": lazy_pgettext("action", "批准"),
    "request_supplement": lazy_pgettext("action", "要求补正"),
    "supplement": lazy_pgettext("action", "登记补正材料"),
    "reject": lazy_pgettext("action", "不予办理"),
    "record_result": lazy_pgettext("action", "登记办理结果"),
    "deliver": lazy_pgettext("action", "送达"),
    "transfer": lazy_pgettext("action", "转办"),
    "withdraw": lazy_pgettext("action", "撤回申请"),
    "evaluate": lazy_pgettext("action", "评价"),
}
# Catalogue codes by kind (the acceptance, case and catalogue pages share them).
OPTION_LABELS: dict[str, dict[str, LazyString]] = {
    "form": {
        "original": lazy_gettext("原件"),
        "copy": lazy_gettext("复印件"),
        "electronic": lazy_gettext("电子件"),
    },
    "handling": {
        "immediate": lazy_gettext("即办件"),
        "promised": lazy_gettext("承诺件"),
    },
    "delivery": {
        "window": lazy_gettext("窗口领取"),
        "post": lazy_gettext("邮寄送达"),
        "electronic": lazy_gettext("电子送达"),
    },
    "rule": {
        "residence": lazy_gettext("户籍（居住）地"),
        "property": lazy_gettext("不动产所在地"),
        "business_registration": lazy_gettext("登记注册地"),
        "nearest": lazy_gettext("就近办理（受理地）"),
    },
    "source": {
        "applicant": lazy_gettext("申请人提供"),
        "shared_library": lazy_gettext("共享材料库调取"),
        "issued_by_department": lazy_gettext("部门核发"),
    },
    "scope": {
        "national": lazy_gettext("全国通办"),
        "province": lazy_gettext("跨省通办"),
        "city": lazy_gettext("全市通办"),
        "county": lazy_gettext("全县通办"),
    },
}


def role_label(role: str) -> str:
    label = ROLE_LABELS.get(role)
    return str(label) if label is not None else role


def state_label(state: str) -> str:
    try:
        value = CaseState(state)
    except ValueError:
        return state
    return value.label_en if lang() == "en" else value.label_zh


def flag_label(level: str | None) -> str:
    label = FLAG_LABELS.get(level or "")
    return str(label) if label is not None else ""


def action_label(action: str) -> str:
    label = ACTION_LABELS.get(action)
    return str(label) if label is not None else action


def tier_text(tier: Tier) -> str:
    return str(TIER_LABELS[tier])


def option_label(kind: str, value: str) -> str:
    """The label of a catalogue code of ``kind`` (a key of OPTION_LABELS, or ``tier``)."""
    if kind == "tier":
        return tier_text(Tier[value.upper()])
    label = OPTION_LABELS[kind].get(value)
    return str(label) if label is not None else value


def china_time(iso_utc: str | None) -> str:
    """An ISO-8601 UTC instant as China time; what a window officer reads off the wall clock."""
    if not iso_utc:
        return ""
    try:
        instant = datetime.fromisoformat(iso_utc.replace("Z", "+00:00"))
    except ValueError:
        return iso_utc
    return instant.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")


def node_name(code: str | None) -> str:
    tree = context().tree
    return tree.get(code).name if code and code in tree else ""


def department_name(code: str | None) -> str:
    try:
        department = context().catalogue.department(code or "")
    except DomainError:
        return code or ""
    return department.name_en if lang() == "en" else department.name_zh
