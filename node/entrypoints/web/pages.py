"""Server-rendered staff and public pages: sign-in, window acceptance, inbox, case detail, citizen query.

Chinese by default; ``?lang=en`` (or ``?lang=zh``) switches the language and the session remembers it.
Staff sign in with Flask's signed session cookie; every POST form carries a per-session CSRF token, and
every page re-reads the account so that a changed role or a deleted account takes effect at once.
The pages call the same :class:`CaseService` as the JSON API and show its bilingual ``DomainError``s.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    get_flashed_messages,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue

from node.adapters.nodestate import Account
from node.domain.case import ACCEPTOR, ADMIN, APPROVER, OPS, SUPERVISOR, CaseState
from node.domain.catalogue import Matter
from node.domain.errors import DomainError
from node.domain.events import EVALUATION_LEVELS
from node.entrypoints.web.api import STATUS, context, error_response
from node.entrypoints.web.commands import accept_case_from_form, act_on_case_from_form
from node.service_layer.cases import CHINA, Actor
from tiers import Division, Tier

pages = Blueprint("pages", __name__)

LANGS = ("zh", "en")
STAFF_ROLES = (ACCEPTOR, APPROVER, SUPERVISOR, OPS, ADMIN)
ACCEPT_ROLES = (ACCEPTOR, ADMIN)
INBOX_POLL_MS = 5000

# --- UI strings ---------------------------------------------------------------------------------------
# key -> (zh, en). Values may contain str.format placeholders.

STRINGS: dict[str, tuple[str, str]] = {
    "app_title": ("通办 · 一网通办政务服务", "Tongban government services"),
    "footer": ("通办 Tongban · 四级联办政务服务平台", "Tongban · four-tier government-service platform"),
    "nav_home": ("首页", "Home"),
    "nav_accept": ("综合窗口受理", "Accept an application"),
    "nav_inbox": ("待办箱", "Inbox"),
    "nav_query": ("办件进度查询", "Case progress"),
    "nav_ops": ("运行监控", "Operations"),
    "nav_login": ("工作人员登录", "Staff sign-in"),
    "nav_logout": ("退出", "Sign out"),
    "lang_other": ("English", "中文"),
    "node_code": ("节点代码", "Node code"),
    "tier": ("层级", "Tier"),
    "signed_in_as": ("当前用户：", "Signed in as "),
    "home_title": ("政务服务节点", "Government-service node"),
    "home_public": ("群众办事", "For applicants"),
    "home_staff": ("工作人员", "For staff"),
    "home_accept_desc": (
        "受理群众和企业的办事申请，材料不全时出具一次性告知书",
        "Accept applications; print a one-time notice when materials are missing",
    ),
    "home_inbox_desc": (
        "查看本岗位待办案件、时限预警，检索案件",
        "Cases waiting for your role, deadline flags, search",
    ),
    "home_query_desc": (
        "凭受理编号和身份证件号码查询办理进度",
        "Check progress with the case number and your ID number",
    ),
    "home_login_desc": ("受理、审批、监督人员登录后办理业务", "Acceptors, approvers and supervisors sign in here"),
    # sign-in
    "login_title": ("工作人员登录", "Staff sign-in"),
    "username": ("用户名", "Username"),
    "password": ("密码", "Password"),
    "login_button": ("登录", "Sign in"),
    "bad_credentials": ("用户名或密码错误", "Wrong username or password"),
    "login_required": ("请先登录", "Please sign in first"),
    "signed_in": ("登录成功，欢迎 {name}", "Signed in. Welcome, {name}"),
    "signed_out": ("已退出登录", "Signed out"),
    # errors
    "error_title": ("无法完成请求", "The request could not be completed"),
    "csrf_failed": ("表单已失效，请刷新页面后重新提交", "The form has expired; reload the page and submit again"),
    "role_forbidden": ("您的角色（{role}）无权访问此页面", "Your role ({role}) may not open this page"),
    "back_home": ("返回首页", "Back to the home page"),
    # acceptance
    "accept_title": ("综合窗口受理", "Accept an application"),
    "step_matter": ("第一步：选择办理事项", "Step 1: choose the matter"),
    "step_details": ("第二步：申请人信息与材料", "Step 2: applicant and materials"),
    "matter": ("办理事项", "Matter"),
    "choose_matter": ("— 请选择事项 —", "— choose a matter —"),
    "choose": ("选择", "Choose"),
    "choose_matter_first": ("请先在上方选择办理事项", "Choose a matter above first"),
    "applicant": ("申请人", "Applicant"),
    "applicant_kind": ("申请人类型", "Applicant type"),
    "kind_person": ("个人", "Person"),
    "kind_enterprise": ("企业", "Enterprise"),
    "applicant_id": ("身份证号码 / 统一社会信用代码", "ID number / unified social credit code"),
    "applicant_id_hint": (
        "个人填写 18 位身份证号码，企业填写 18 位统一社会信用代码",
        "18-character ID number for a person, 18-character credit code for an enterprise",
    ),
    "applicant_name": ("姓名 / 企业名称", "Name / enterprise name"),
    "materials": ("申请材料（已收取的打 √）", "Materials (tick those handed in)"),
    "required": ("必交", "required"),
    "optional": ("可选", "optional"),
    "copies": ("{n} 份", "{n} copies"),
    "form_original": ("原件", "original"),
    "form_copy": ("复印件", "copy"),
    "form_electronic": ("电子件", "electronic"),
    "matter_info": (
        "{department} · {handling} · 承诺 {days} 个工作日 · {tier}级办理",
        "{department} · {handling} · {days} working days promised · handled at {tier} level",
    ),
    "handling_immediate": ("即办件", "immediate"),
    "handling_promised": ("承诺件", "promised"),
    "location": ("管辖地", "Jurisdiction"),
    "residence_code": ("户籍所在地区划代码", "Registered residence (division code)"),
    "residence_code_hint": (
        "申请人户籍（居住）地的 12 位区划代码，例如 {code}；决定由哪个节点办理",
        "12-character division code of the applicant's registered residence, e.g. {code}; "
        "it decides which node handles the case",
    ),
    "property_code": ("不动产所在地区划代码", "Property location (division code)"),
    "property_code_hint": (
        "不动产所在地的 12 位区划代码，例如 {code}",
        "12-character division code where the property lies, e.g. {code}",
    ),
    "registered_code": ("登记注册地区划代码", "Place of registration (division code)"),
    "registered_code_hint": (
        "企业（个体户）登记注册地的 12 位区划代码，例如 {code}",
        "12-character division code where the business is registered, e.g. {code}",
    ),
    "settle_on_spot": ("即办件当场办结", "Immediate matter: settle on the spot"),
    "settle_on_spot_hint": (
        "仅当本节点有权办理时当场办结；否则按流程流转",
        "Only settles here when this node holds the authority; otherwise the case is routed",
    ),
    "refuse": ("不予受理", "Refuse to accept"),
    "refuse_reason": (
        "不予受理理由（填写后将出具不予受理决定，不再受理）",
        "Reason for refusal (fill in only to refuse the application)",
    ),
    "submit_accept": ("提交受理", "Submit"),
    "accepted_flash": ("已受理，受理编号：{case_no}", "Accepted. Case number: {case_no}"),
    "routed_flash": (
        "已受理，受理编号：{case_no}；已流转至 {node} 办理",
        "Accepted. Case number: {case_no}; routed to {node}",
    ),
    "settled_flash": ("即办件已当场办结，受理编号：{case_no}", "Settled on the spot. Case number: {case_no}"),
    "refused_flash": ("已登记不予受理，编号：{case_no}", "Refusal recorded. Number: {case_no}"),
    # one-time notice
    "notice_intro": ("申请人 {name}：", "To the applicant {name}:"),
    "notice_body": (
        "您申请办理的「{matter}」事项，经窗口审核，申请材料尚不齐全。根据一次性告知制度，现将需补正的全部材料告知如下，请补齐后再次提交申请：",
        "Your application for “{matter}” is missing materials. Under the one-time notice rule, all the "
        "missing materials are listed below; please bring them all and apply again:",
    ),
    "notice_material": ("材料名称", "Material"),
    "notice_form": ("形式", "Form"),
    "notice_copies": ("份数", "Copies"),
    "notice_department": ("主管部门", "Department"),
    "notice_issuer": ("告知单位", "Issued by"),
    "notice_date": ("告知日期", "Date"),
    "notice_window_sign": ("窗口工作人员签字", "Window officer's signature"),
    "notice_applicant_sign": ("申请人签收", "Applicant's signature"),
    "print": ("打印告知书", "Print the notice"),
    "back_to_form": ("返回受理", "Back to the form"),
    # inbox
    "inbox_title": ("待办箱", "Inbox"),
    "search_title": ("案件检索结果", "Search results"),
    "search_placeholder": ("受理编号、事项名称或申请人", "Case number, matter or applicant"),
    "search": ("检索", "Search"),
    "all_states": ("全部状态", "All states"),
    "clear_search": ("清除检索", "Clear search"),
    "col_case_no": ("受理编号", "Case number"),
    "col_matter": ("事项", "Matter"),
    "col_applicant": ("申请人", "Applicant"),
    "col_state": ("状态", "State"),
    "col_deadline": ("办理时限", "Deadline"),
    "col_flag": ("预警", "Flag"),
    "inbox_empty": ("暂无待办案件", "Nothing waiting"),
    "auto_refresh": ("每 5 秒自动刷新", "Refreshes every 5 seconds"),
    "paused": ("暂停计时", "clock paused"),
    "flag_warning": ("预警", "warning"),
    "flag_yellow": ("黄牌", "yellow card"),
    "flag_red": ("红牌", "red card"),
    # case detail
    "case_title": ("案件详情", "Case"),
    "case_no": ("受理编号", "Case number"),
    "state": ("办理状态", "State"),
    "id_masked": ("证件号码", "ID number"),
    "accepting_node": ("受理节点", "Accepting node"),
    "handling_node": ("办理节点", "Handling node"),
    "deadline": ("办理时限", "Deadline"),
    "reason": ("理由", "Reason"),
    "result": ("办理结果", "Result"),
    "certificate_id": ("证照编号", "Certificate number"),
    "delivery": ("送达", "Delivery"),
    "evaluation": ("评价", "Evaluation"),
    "withdrawal_requested": ("申请人已申请撤回", "The applicant asked to withdraw"),
    "anomalies": ("有 {n} 条记录未能生效（已隔离审查）", "{n} event(s) could not apply (held for review)"),
    "timeline": ("办理过程", "Timeline"),
    "col_time": ("时间（北京时间）", "Time (China, UTC+8)"),
    "col_node": ("节点", "Node"),
    "col_actor": ("经办人", "Officer"),
    "col_summary": ("事项", "What happened"),
    "actions": ("可执行的操作", "Actions"),
    "no_actions": ("当前角色在本节点对此案件没有可执行的操作", "Your role has no action on this case at this node"),
    "reason_required_label": ("理由（必填）", "Reason (required)"),
    "note_optional": ("备注（可选）", "Note (optional)"),
    "new_handling_node": ("转至节点（12 位区划代码）", "New handling node (12-character division code)"),
    "delivery_method": ("送达方式", "Delivery method"),
    "method_window": ("窗口领取", "collect at the window"),
    "method_post": ("邮寄送达", "by post"),
    "method_electronic": ("电子送达", "electronic"),
    "result_summary": ("办理结果摘要（必填）", "Result summary (required)"),
    "certificate_optional": ("证照编号（可选）", "Certificate number (optional)"),
    "level": ("评价等级", "Rating"),
    "supplement_materials": ("补正收取的材料", "Materials handed in"),
    "action_done": ("已{action}", "Done: {action}"),
    "action_approve": ("批准", "Approve"),
    "action_reject": ("不予办理", "Reject"),
    "action_request_supplement": ("要求补正", "Request a supplement"),
    "action_supplement": ("登记补正材料", "Record the supplement"),
    "action_receive": ("接收案件", "Receive"),
    "action_record_result": ("登记办理结果", "Record the result"),
    "action_deliver": ("送达", "Deliver"),
    "action_transfer": ("转办", "Transfer"),
    "action_withdraw": ("撤回申请", "Withdraw"),
    "action_evaluate": ("评价", "Evaluate"),
    # matter catalogue
    "nav_catalogue": ("事项目录", "Catalogue"),
    "catalogue_title": ("政务服务事项目录", "Catalogue of government-service matters"),
    "catalogue_version": ("第 {version} 版", "version {version}"),
    "catalogue_read_only_note": (
        "事项目录由市级编制发布，经同步到达本节点，在本节点只读。",
        "The catalogue is authored and published at the city and replicated here; it is read-only at this node.",
    ),
    "catalogue_author_note": (
        "保存任一事项的修改即发布目录新版本，并同步至全市各节点（运行中的节点约 10 秒内生效）。",
        "Saving a change to any matter publishes a new catalogue version, replicated to every node "
        "(running nodes use it within about 10 seconds).",
    ),
    "catalogue_new": ("新增事项", "Add a matter"),
    "catalogue_new_title": ("新增事项", "New matter"),
    "catalogue_edit_title": ("编辑事项", "Edit matter"),
    "catalogue_view_title": ("事项详情", "Matter"),
    "catalogue_not_author": (
        "只有市级节点的管理员可以编辑事项目录",
        "Only an administrator at the city node may edit the catalogue",
    ),
    "catalogue_published": (
        "已发布事项目录第 {version} 版（事项 {code}）",
        "Published catalogue version {version} (matter {code})",
    ),
    "catalogue_code_required": ("请填写事项编码", "Enter the matter code"),
    "catalogue_save": ("保存并发布新版本", "Save and publish a new version"),
    "catalogue_back": ("返回事项目录", "Back to the catalogue"),
    "catalogue_edit": ("编辑", "Edit"),
    "catalogue_view": ("查看", "View"),
    "catalogue_days": ("{legal} / {promised} 个工作日", "{legal} / {promised} working days"),
    "catalogue_materials_hint": (
        "空白行用于新增材料；勾选“删除”去掉一项。同一材料编码在全市目录中只能对应一个名称。",
        "Fill a blank row to add a material; tick “remove” to drop one. A material code names one "
        "material across the whole catalogue.",
    ),
    "delegations_title": ("实施清单：区域下放与承诺时限", "Implementation lists: delegation by region"),
    "delegations_intro": (
        "区域的实施清单可把本事项的办理权限下放到本级或下级，或缩短承诺时限；适用于管辖地在该区域内的案件。",
        "A region's implementation list may delegate this matter to its own tier or below, or shorten the "
        "promised time; it applies to cases whose jurisdiction location lies in the region.",
    ),
    "delegations_none": ("没有区域调整本事项", "No region changes this matter"),
    "delegation_region": ("区域（12 位区划代码）", "Region (12-character division code)"),
    "delegation_tier": ("下放到", "Delegated to"),
    "delegation_days": ("承诺时限（工作日）", "Promised days"),
    "delegation_unchanged": ("不变", "unchanged"),
    "delegation_save": ("保存并发布", "Save and publish"),
    "delegation_remove": ("取消", "Remove"),
    "field_code": ("事项编码", "Matter code"),
    "field_name": ("事项名称", "Name"),
    "field_matter_type": ("事项类型", "Type"),
    "field_department": ("主管部门", "Department"),
    "field_authority_tier": ("办理层级", "Authority tier"),
    "field_jurisdiction_rule": ("管辖规则", "Jurisdiction rule"),
    "field_legal_days": ("法定时限（工作日）", "Legal time limit (working days)"),
    "field_promised_days": ("承诺时限（工作日）", "Promised time limit (working days)"),
    "field_days": ("法定 / 承诺时限", "Legal / promised time limit"),
    "field_handling_type": ("办件类型", "Handling type"),
    "field_visits_required": ("到现场次数", "Visits required"),
    "field_fee_yuan": ("收费（元）", "Fee (yuan)"),
    "field_online_depth": ("网办深度（1–4）", "Online depth (1–4)"),
    "field_delivery_options": ("送达方式", "Delivery options"),
    "field_tongban_scope": ("通办范围", "Tongban scope"),
    "field_materials": ("申请材料", "Materials"),
    "field_version": ("事项版本", "Matter version"),
    "mat_code": ("材料编码", "Code"),
    "mat_name": ("材料名称", "Name"),
    "mat_form": ("形式", "Form"),
    "mat_copies": ("份数", "Copies"),
    "mat_source": ("来源", "Source"),
    "mat_required": ("必交", "Required"),
    "mat_remove": ("删除", "Remove"),
    "rule_residence": ("户籍（居住）地", "registered residence"),
    "rule_property": ("不动产所在地", "property location"),
    "rule_business_registration": ("登记注册地", "place of business registration"),
    "rule_nearest": ("就近办理（受理地）", "nearest (where accepted)"),
    "source_applicant": ("申请人提供", "from the applicant"),
    "source_shared_library": ("共享材料库调取", "from the shared library"),
    "source_issued_by_department": ("部门核发", "issued by a department"),
    "scope_national": ("全国通办", "nationwide"),
    "scope_province": ("跨省通办", "across provinces"),
    "scope_city": ("全市通办", "city-wide"),
    "scope_county": ("全县通办", "county-wide"),
    # citizen query
    "query_title": ("办件进度查询", "Check the progress of a case"),
    "query_intro": (
        "请输入受理回执上的受理编号，以及申请时使用的身份证号码（企业填写统一社会信用代码）。",
        "Enter the case number from your receipt and the ID number (or credit code) used when applying.",
    ),
    "query_id": ("身份证号码 / 统一社会信用代码", "ID number / credit code"),
    "query_button": ("查询", "Check"),
    "query_missing": ("请输入受理编号和证件号码", "Enter the case number and the ID number"),
    "query_result": ("查询结果", "Result"),
}

ROLE_LABELS: dict[str, tuple[str, str]] = {
    ACCEPTOR: ("受理人员", "acceptor"),
    APPROVER: ("审批人员", "approver"),
    SUPERVISOR: ("监督人员", "supervisor"),
    OPS: ("运维人员", "operations"),
    ADMIN: ("管理员", "administrator"),
    "citizen": ("申请人", "applicant"),
}
TIER_LABELS_EN = {"city": "city", "county": "county/district", "township": "township", "village": "village/community"}
EVALUATION_LABELS_EN = {
    1: "very satisfied",
    2: "satisfied",
    3: "fairly satisfied",
    4: "dissatisfied",
    5: "very dissatisfied",
}
ACTION_ORDER = (
    "receive",
    "approve",
    "request_supplement",
    "supplement",
    "reject",
    "record_result",
    "deliver",
    "transfer",
    "withdraw",
    "evaluate",
)


def lang() -> str:
    chosen = session.get("lang")
    return chosen if chosen in LANGS else "zh"


def t(key: str, **values: Any) -> str:
    zh, en = STRINGS[key]
    text = en if lang() == "en" else zh
    return text.format(**values) if values else text


def both(key: str, **values: Any) -> dict[str, str]:
    """A UI string in both languages, for flash messages that outlive the current language choice."""
    zh, en = STRINGS[key]
    return {"zh": zh.format(**values), "en": en.format(**values)}


def bilingual(exc: DomainError) -> dict[str, str]:
    return {"zh": exc.message_zh, "en": exc.message_en}


def role_label(role: str) -> str:
    zh, en = ROLE_LABELS.get(role, (role, role))
    return en if lang() == "en" else zh


def state_label(state: str) -> str:
    try:
        value = CaseState(state)
    except ValueError:
        return state
    return value.label_en if lang() == "en" else value.label_zh


def flag_label(level: str | None) -> str:
    return t(f"flag_{level}") if level in ("warning", "yellow", "red") else ""


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


def tier_text(tier: Tier) -> str:
    return TIER_LABELS_EN[tier.name.lower()] if lang() == "en" else tier.label_zh


def department_name(code: str | None) -> str:
    try:
        department = context().catalogue.department(code or "")
    except DomainError:
        return code or ""
    return department.name_en if lang() == "en" else department.name_zh


# --- session, CSRF and roles --------------------------------------------------------------------------


@pages.record_once
def _configure(state: BlueprintSetupState) -> None:
    # Lax: a cross-site POST does not carry the session cookie (the CSRF token is the main defence).
    state.app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def current_account() -> Account | None:
    if "account" not in g:
        username = session.get("user")
        account = context().state.account(username) if isinstance(username, str) else None
        if account is None:
            session.pop("user", None)
        g.account = account
    return g.account


@pages.before_request
def _before() -> ResponseReturnValue | None:
    chosen = request.args.get("lang")
    if chosen in LANGS:
        session["lang"] = chosen
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        expected = session.get("csrf")
        if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
            return error_page(400, both("csrf_failed"))
    return None


@pages.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if current_account() is not None or request.method == "POST":
        response.headers["Cache-Control"] = "no-store"  # personal data must not linger in shared caches
    return response


def error_page(status: int, message: dict[str, str]) -> ResponseReturnValue:
    return render_template("error.html", error=message, status=status), status


def staff_page(*roles: str) -> Callable[[Callable[..., ResponseReturnValue]], Callable[..., ResponseReturnValue]]:
    """Signed-in staff only; with ``roles``, only those roles. Sets ``g.actor``."""

    def decorator(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            account = current_account()
            if account is None:
                flash(both("login_required"), "info")
                target = request.full_path.rstrip("?") if request.method == "GET" else request.path
                return redirect(url_for("pages.login", next=target))
            if account.role not in (roles or STAFF_ROLES):
                zh, en = STRINGS["role_forbidden"]
                role_zh, role_en = ROLE_LABELS.get(account.role, (account.role, account.role))
                return error_page(403, {"zh": zh.format(role=role_zh), "en": en.format(role=role_en)})
            g.actor = Actor.of(account)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def _safe_next(target: str | None) -> str:
    # Only same-site paths: never redirect a fresh sign-in to another host.
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return url_for("pages.home")


def lang_url(target: str) -> str:
    """The current page in the other language (POST-only pages fall back to a page one can GET)."""
    endpoint = request.endpoint or ""
    view_args = dict(request.view_args or {})
    if endpoint == "pages.act":
        return url_for("pages.case", case_no=view_args.get("case_no", ""), lang=target)
    rule = request.url_rule
    if endpoint in ("catalogue.save_matter", "catalogue.add_matter"):
        return url_for("catalogue.index", lang=target)
    if not endpoint.startswith(("pages.", "catalogue.")) or rule is None or "GET" not in (rule.methods or ()):
        return url_for("pages.home", lang=target)
    return url_for(endpoint, **{**request.args.to_dict(), **view_args, "lang": target})


@pages.context_processor
def _template_helpers() -> dict[str, Any]:
    return {
        "t": t,
        "lang": lang(),
        "other_lang": "en" if lang() == "zh" else "zh",
        "lang_url": lang_url,
        "csrf_token": csrf_token,
        "account": current_account(),
        "role_label": role_label,
        "state_label": state_label,
        "flag_label": flag_label,
        "china_time": china_time,
        "node": context().division,
        "node_name": node_name,
        "tier_label": tier_text(context().division.tier),
        "tier_text": tier_text,
        "department_name": department_name,
        "ACCEPT_ROLES": ACCEPT_ROLES,
        # Only the tier that monitors the federation (the city) serves the ops dashboard.
        "MONITORS": context().monitors_operations,
        "flashes": get_flashed_messages(with_categories=True),
    }


# --- pages --------------------------------------------------------------------------------------------


@pages.get("/")
def home() -> ResponseReturnValue:
    return render_template("home.html")


@pages.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    next_url = request.values.get("next", "")
    if request.method == "GET":
        return render_template("login.html", next_url=next_url, username="")
    username = request.form.get("username", "")[:100]
    password = request.form.get("password", "")[:200]
    account = context().state.authenticate(username, password) if username and password else None
    if account is None:
        return render_template("login.html", next_url=next_url, username=username, error=both("bad_credentials")), 401
    chosen = lang()
    session.clear()  # a new session on sign-in: no fixation, a fresh CSRF token
    session["user"] = account.username
    session["lang"] = chosen
    flash(both("signed_in", name=account.display_name), "success")
    return redirect(_safe_next(next_url))


@pages.post("/logout")
def logout() -> ResponseReturnValue:
    chosen = lang()
    session.clear()
    session["lang"] = chosen
    flash(both("signed_out"), "info")
    return redirect(url_for("pages.home"))


# --- acceptance ---


def matter_groups() -> list[tuple[Any, list[Matter]]]:
    """The catalogue's matters by department, departments without matters left out."""
    catalogue = context().catalogue
    matters = catalogue.matters()
    groups = [(d, [m for m in matters if m.department == d.code]) for d in catalogue.departments()]
    return [(d, ms) for d, ms in groups if ms]


def _render_accept(
    values: dict[str, Any], status: int = 200, error: dict[str, str] | None = None
) -> ResponseReturnValue:
    catalogue = context().catalogue
    code = values.get("matter_code", "")
    selected = catalogue.get(code) if code in catalogue else None
    page = render_template(
        "accept.html",
        groups=matter_groups(),
        selected=selected,
        values=values,
        error=error,
        example_code=context().division.code,
    )
    return page, status


@pages.route("/accept", methods=["GET", "POST"])
@staff_page(*ACCEPT_ROLES)
def accept() -> ResponseReturnValue:
    if request.method == "GET":
        return _render_accept({"matter_code": request.args.get("matter", ""), "applicant_kind": "person"})
    form = request.form
    values: dict[str, Any] = {key: form.get(key, "") for key in form if key not in ("csrf_token", "materials")}
    values["materials"] = form.getlist("materials")
    try:
        outcome = context().bus.handle(accept_case_from_form(g.actor, form))
    except DomainError as exc:
        return _render_accept(values, STATUS[exc.kind], bilingual(exc))
    if outcome.outcome == "incomplete":
        assert outcome.notice is not None
        matter = context().catalogue.get(outcome.notice["matter_code"])
        return render_template(
            "notice.html",
            notice=outcome.notice,
            applicant_name=values.get("applicant_name", ""),
            department=department_name(matter.department),
        )
    assert outcome.case_no is not None and outcome.case is not None
    case = outcome.case
    if outcome.outcome == "refused":
        message = both("refused_flash", case_no=outcome.case_no)
    elif case.state is CaseState.DELIVERED:
        message = both("settled_flash", case_no=outcome.case_no)
    elif case.handling_node != context().config.code:
        message = both("routed_flash", case_no=outcome.case_no, node=node_name(case.handling_node))
    else:
        message = both("accepted_flash", case_no=outcome.case_no)
    flash(message, "success")
    return redirect(url_for("pages.case", case_no=outcome.case_no), 303)


# --- inbox ---


def _inbox_rows() -> tuple[list[dict[str, Any]], str, str]:
    actor: Actor = g.actor
    text = request.args.get("q", "").strip()[:100]
    state = request.args.get("state", "")
    state = state if state in {s.value for s in CaseState} else ""
    readmodel = context().readmodel
    if text or state:
        rows = readmodel.search(text=text, state=state or None)
    else:
        rows = readmodel.inbox(context().config.code, actor.role, actor.department)
    shown = [
        row.to_dict()
        | {
            "state_label": state_label(row.state),
            "flag_label": flag_label(row.flag),
            "url": url_for("pages.case", case_no=row.case_no),
        }
        for row in rows
    ]
    return shown, text, state


@pages.get("/inbox")
@staff_page()
def inbox() -> ResponseReturnValue:
    rows, text, state = _inbox_rows()
    filters = {key: value for key, value in (("q", text), ("state", state)) if value}
    return render_template(
        "inbox.html",
        rows=rows,
        q=text,
        state=state,
        states=list(CaseState),
        source=url_for("pages.inbox_json", **filters),
        events=url_for("pages.inbox_events"),
        poll_ms=INBOX_POLL_MS,
    )


@pages.get("/inbox/events")
@staff_page()
def inbox_events() -> ResponseReturnValue:
    board = current_app.extensions["tongban.notices"]
    return Response(
        stream_with_context(board.stream()), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@pages.get("/inbox.json")
def inbox_json() -> ResponseReturnValue:
    account = current_account()
    if account is None:
        return error_response("unauthenticated", "请先登录", "sign in first", 401)
    if account.role not in STAFF_ROLES:
        return error_response("role_not_allowed", "您的角色无权查看待办", f"role {account.role!r} has no inbox", 403)
    g.actor = Actor.of(account)
    rows, _text, _state = _inbox_rows()
    return jsonify({"node": context().config.code, "role": account.role, "paused_label": t("paused"), "cases": rows})


# --- case detail and actions ---


def _render_case(
    case_no: str, status: int = 200, error: dict[str, str] | None = None, values: dict[str, Any] | None = None
) -> ResponseReturnValue:
    service = context().cases
    try:
        case = service.load(case_no)
    except DomainError as exc:
        return error_page(STATUS[exc.kind], bilingual(exc))
    view = service.staff_view(g.actor, case)
    allowed = [a for a in ACTION_ORDER if a in view["allowed_actions"]]
    matter = context().catalogue.get(case.matter_code) if case.matter_code in context().catalogue else None
    page = render_template(
        "case.html",
        case=view,
        actions=allowed,
        matter=matter,
        error=error,
        values=values or {},
        evaluation_levels=[
            (level, EVALUATION_LABELS_EN[level] if lang() == "en" else label)
            for level, label in EVALUATION_LEVELS.items()
        ],
        transfer_targets=_transfer_targets(case.handling_node) if "transfer" in allowed else [],
    )
    return page, status


def _transfer_targets(current: str) -> list[Division]:
    """Suggestions for the transfer field: the city, every county, and this node's ancestors and children."""
    tree = context().tree
    here = context().config.code
    codes = {tree.root, *(d.code for d in tree.of_tier(Tier.COUNTY)), *tree.path_to_root(here), *tree.children(here)}
    codes.discard(current)
    return [tree.get(code) for code in sorted(codes)]


@pages.get("/cases/<case_no>")
@staff_page()
def case(case_no: str) -> ResponseReturnValue:
    return _render_case(case_no)


@pages.post("/cases/<case_no>/actions")
@staff_page()
def act(case_no: str) -> ResponseReturnValue:
    values = request.form.to_dict()
    try:
        context().bus.handle(act_on_case_from_form(g.actor, case_no, request.form))
    except DomainError as exc:
        return _render_case(case_no, STATUS[exc.kind], bilingual(exc), values=values)
    action = values.get("action", "")
    done = STRINGS.get(f"action_{action}", (action, action))
    zh, en = STRINGS["action_done"]
    flash({"zh": zh.format(action=done[0]), "en": en.format(action=done[1])}, "success")
    return redirect(url_for("pages.case", case_no=case_no), 303)


# --- citizen query ---


@pages.route("/query", methods=["GET", "POST"])
def query() -> ResponseReturnValue:
    if request.method == "GET":
        return render_template("query.html", values={}, result=None)
    case_no = request.form.get("case_no", "").strip()[:80]
    identifier = request.form.get("id_number", "").strip().upper()[:40]
    # The ID number is never echoed back into the page: it is the secret half of the pair.
    values = {"case_no": case_no}
    if not case_no or not identifier:
        return render_template("query.html", values=values, result=None, error=both("query_missing")), 400
    try:
        result = context().cases.citizen_progress(case_no, identifier)
    except DomainError as exc:
        return render_template("query.html", values=values, result=None, error=bilingual(exc)), STATUS[exc.kind]
    return render_template("query.html", values=values, result=result)
