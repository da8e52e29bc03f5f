"""Server-rendered staff and public pages: home, window acceptance, inbox, case detail, citizen query.

Views only: signing in is :mod:`auth`'s, the text is gettext's (:mod:`i18n`, :mod:`labels`). The
pages call the same :class:`CaseService` as the JSON API and show its bilingual ``DomainError``s.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from flask_babel import gettext, lazy_gettext

from node.domain.case import CaseState
from node.domain.catalogue import Matter
from node.domain.errors import DomainError
from node.entrypoints.web.auth import ACCEPT_ROLES, STAFF_ROLES, current_account, staff_page
from node.entrypoints.web.commands import accept_case_from_form, act_on_case_from_form
from node.entrypoints.web.http import (
    STATUS,
    case_rows,
    case_view,
    checked_action,
    citizen_progress,
    context,
    error_page,
    error_response,
    query_param,
)
from node.entrypoints.web.i18n import bilingual, both
from node.entrypoints.web.labels import (
    ACTION_LABELS,
    EVALUATION_LABELS,
    department_name,
    flag_label,
    node_name,
    state_label,
)
from node.entrypoints.web.limits import QUERY_PER_ADDRESS, QUERY_PER_CASE, case_number_key, configured, limiter
from node.service_layer.cases import Actor
from tiers import Division, Tier

blueprint = Blueprint("pages", __name__)


@blueprint.record_once
def _defaults(state: BlueprintSetupState) -> None:
    state.app.config.setdefault(INBOX_STREAMS_KEY, INBOX_STREAMS)


INBOX_POLL_MS = 5000
# Open event streams per web process (gunicorn has 16 threads per worker), how long one lasts, and
# when a refused page may try again.
INBOX_STREAMS_KEY = "TONGBAN_INBOX_STREAMS"
INBOX_STREAMS = 4
INBOX_STREAM_S = 25.0
INBOX_STREAM_RETRY_S = 30
_SLOTS_LOCK = threading.Lock()
CASE_STATES = frozenset(state.value for state in CaseState)


@blueprint.get("/")
def home() -> ResponseReturnValue:
    return render_template("home.html")


# --- acceptance ---


def matter_groups() -> list[tuple[Any, list[Matter]]]:
    """The catalogue's matters by department, departments without matters left out."""
    catalogue = context().catalogue
    matters = catalogue.matters()
    groups = [(d, [m for m in matters if m.department == d.code]) for d in catalogue.departments()]
    return [(d, ms) for d, ms in groups if ms]


def _render_accept(
    values: dict[str, Any],
    status: int = 200,
    error: dict[str, str] | None = None,
    identity: dict[str, Any] | None = None,
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
        identity=identity,
    )
    return page, status


@blueprint.post("/accept/identify")
@staff_page(*ACCEPT_ROLES)
def accept_identify() -> ResponseReturnValue:
    """刷脸: verify the applicant's photo at the window; after a match the acceptance form is filled in."""
    service = context().identity_service
    matter_code = request.form.get("matter_code", "").strip()[:64]
    id_number = request.form.get("id_number", "").strip().upper()[:40]
    values: dict[str, Any] = {"matter_code": matter_code, "applicant_kind": "person", "applicant_id": id_number}
    upload = request.files.get("photo")
    photo = upload.read() if upload is not None else b""
    if service is None or not id_number or not photo:
        return _render_accept(values, 400, both(lazy_gettext("请填写身份证号码并拍摄或上传照片")))
    try:
        result = service.verify(g.actor, id_number, photo, "window")
    except DomainError as exc:
        return _render_accept(values, STATUS[exc.kind], bilingual(exc))
    identity: dict[str, Any] = {"verification": result}
    if not result["match"]:
        message = both(lazy_gettext("人脸核验未通过：照片与该身份证号码的登记人像不符，请改用身份证件人工核验"))
        return _render_accept(values, 409, message, identity)
    person = result.get("person") or {}
    values |= {"applicant_name": person.get("name", ""), "verification_ticket": result["verification_id"]}
    if person.get("residence_code"):
        values["residence_code"] = person["residence_code"]
    if matter_code in context().catalogue:
        on_file = service.on_file_for(id_number, matter_code)
        identity["on_file"] = on_file
        values["materials"] = [item["material_code"] for item in on_file if item["on_file"]]
        values["library_material"] = [item["material_id"] for item in on_file if item["on_file"]]
    identity["person"] = person
    return _render_accept(values, 200, None, identity)


@blueprint.route("/accept", methods=["GET", "POST"])
@staff_page(*ACCEPT_ROLES)
def accept() -> ResponseReturnValue:
    if request.method == "GET":
        return _render_accept({"matter_code": request.args.get("matter", ""), "applicant_kind": "person"})
    form = request.form
    values: dict[str, Any] = {key: form.get(key, "") for key in form if key not in ("csrf_token", "materials")}
    values["materials"] = form.getlist("materials")
    values["library_material"] = form.getlist("library_material")
    try:
        command = accept_case_from_form(g.actor, form)
        service = context().identity_service
        if service is not None:  # with a face verification and reused library materials (issue 12)
            ticket = form.get("verification_ticket", "").strip()[:64] or None
            outcome = service.accept(g.actor, command, ticket, values["library_material"])  # bounded by the service
        else:
            outcome = context().bus.handle(command)
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
        message = both(lazy_gettext("已登记不予受理，编号：%(case_no)s", case_no=outcome.case_no))
    elif case.state is CaseState.DELIVERED:
        message = both(lazy_gettext("即办件已当场办结，受理编号：%(case_no)s", case_no=outcome.case_no))
    elif case.handling_node != context().config.code:
        message = both(
            lazy_gettext(
                "已受理，受理编号：%(case_no)s；已流转至 %(node)s 办理",
                case_no=outcome.case_no,
                node=node_name(case.handling_node),
            )
        )
    else:
        message = both(lazy_gettext("已受理，受理编号：%(case_no)s", case_no=outcome.case_no))
    flash(message, "success")
    return redirect(url_for("pages.case", case_no=outcome.case_no), 303)


# --- inbox ---


def _inbox_rows() -> tuple[list[dict[str, Any]], str, str]:
    actor: Actor = g.actor
    text = query_param("q", max_length=100).strip()
    state = query_param("state", choices=CASE_STATES)
    readmodel = context().readmodel
    if text or state:
        rows = readmodel.search(text=text, state=state or None)
    else:
        rows = readmodel.inbox(context().config.code, actor.role, actor.department)
    gaps = readmodel.incomplete_cases([row.case_no for row in rows]) if rows else {}
    shown = [
        data
        | {
            "state_label": state_label(data["state"]),
            "flag_label": flag_label(data["flag"]),
            "url": url_for("pages.case", case_no=data["case_no"]),
            "incomplete": data["case_no"] in gaps,
        }
        for data in case_rows(actor, rows, text)
    ]
    return shown, text, state


@blueprint.get("/inbox")
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


def _stream_slots() -> threading.BoundedSemaphore:
    slots = current_app.extensions.get("tongban.inbox_streams")
    if slots is None:
        with _SLOTS_LOCK:
            slots = current_app.extensions.setdefault(
                "tongban.inbox_streams", threading.BoundedSemaphore(current_app.config[INBOX_STREAMS_KEY])
            )
    return slots


@blueprint.get("/inbox/events")
@staff_page()
def inbox_events() -> ResponseReturnValue:
    """Server-sent events for open inbox pages, at most ``INBOX_STREAMS_KEY`` at a time per process.

    A stream holds one of gunicorn's threads while it is open, so streams are bounded (a quarter of
    the threads by default) and short (:data:`INBOX_STREAM_S`): beyond the bound the answer is 503
    with ``Retry-After`` and the page keeps polling ``/inbox.json``, which it does anyway.
    """
    slots = _stream_slots()
    if not slots.acquire(blocking=False):
        response = error_response(
            "streams_busy",
            "实时推送连接已满，页面将定时刷新",
            "too many open event streams; the page falls back to polling",
            503,
        )[0]
        response.status_code = 503
        response.headers["Retry-After"] = str(INBOX_STREAM_RETRY_S)
        return response
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            slots.release()

    board = current_app.extensions["tongban.notices"]
    response = Response(
        stream_with_context(board.stream(lifetime_s=INBOX_STREAM_S, keepalive_s=INBOX_STREAM_S / 2)),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )
    response.call_on_close(release)
    return response


@blueprint.get("/inbox.json")
def inbox_json() -> ResponseReturnValue:
    account = current_account()
    if account is None:
        return error_response("unauthenticated", "请先登录", "sign in first", 401)
    if account.role not in STAFF_ROLES:
        return error_response("role_not_allowed", "您的角色无权查看待办", f"role {account.role!r} has no inbox", 403)
    g.actor = Actor.of(account)
    rows, _text, _state = _inbox_rows()
    paused = gettext("暂停计时")
    labels = {"paused_label": paused, "incomplete_label": gettext("案卷不完整")}
    return jsonify({"node": context().config.code, "role": account.role, **labels, "cases": rows})


# --- case detail and actions ---


def _render_case(
    case_no: str, status: int = 200, error: dict[str, str] | None = None, values: dict[str, Any] | None = None
) -> ResponseReturnValue:
    service = context().cases
    try:
        case = service.load(case_no)
    except DomainError as exc:
        return error_page(STATUS[exc.kind], bilingual(exc))
    view = case_view(g.actor, service.staff_view(g.actor, case))
    allowed = [a for a in ACTION_LABELS if a in view["allowed_actions"]]
    matter = context().catalogue.get(case.matter_code) if case.matter_code in context().catalogue else None
    page = render_template(
        "case.html",
        case=view,
        actions=allowed,
        matter=matter,
        error=error,
        values=values or {},
        evaluation_levels=[(level, str(label)) for level, label in EVALUATION_LABELS.items()],
        transfer_targets=_transfer_targets(case.handling_node) if "transfer" in allowed else [],
        gap=gap_notice(len(case.missing_predecessors), asks_parent=bool(context().config.parent_url)),
    )
    return page, status


def gap_notice(missing: int, asks_parent: bool = True) -> dict[str, str] | None:
    """The banner of a case whose history has a gap (events name predecessors this node does not hold).

    Both languages at once, whatever the page's language, like an error: staff must not miss it.
    A node with a parent asks it again for the missing steps (:class:`sync.link.GapFiller`).
    """
    if not missing:
        return None
    asked_zh = "，已向上级节点重新请求" if asks_parent else ""
    asked_en = " and has asked its parent for them again" if asks_parent else ""
    return {
        "zh": f"案卷不完整：本节点缺少该案件的 {missing} 条前序记录{asked_zh}；补齐之前请勿据此作出决定。",
        "en": f"Incomplete case history: this node lacks {missing} earlier record(s) of this case{asked_en}; "
        "do not decide on the case until they arrive.",
    }


def _transfer_targets(current: str) -> list[Division]:
    """Suggestions for the transfer field: the city, every county, and this node's ancestors and children."""
    tree = context().tree
    here = context().config.code
    codes = {tree.root, *(d.code for d in tree.of_tier(Tier.COUNTY)), *tree.path_to_root(here), *tree.children(here)}
    codes.discard(current)
    return [tree.get(code) for code in sorted(codes)]


@blueprint.get("/cases/<case_no>")
@staff_page()
def case(case_no: str) -> ResponseReturnValue:
    return _render_case(case_no)


@blueprint.post("/cases/<case_no>/actions")
@staff_page()
def act(case_no: str) -> ResponseReturnValue:
    values = request.form.to_dict()
    try:
        command = act_on_case_from_form(g.actor, case_no, request.form)
        context().bus.handle(checked_action(command, request.form.get("signed_request")))
    except DomainError as exc:
        return _render_case(case_no, STATUS[exc.kind], bilingual(exc), values=values)
    action = values.get("action", "")
    flash(both(lazy_gettext("已%(action)s", action=ACTION_LABELS.get(action, action))), "success")
    return redirect(url_for("pages.case", case_no=case_no), 303)


# --- citizen query ---


@blueprint.route("/query", methods=["GET", "POST"])
@limiter.shared_limit(configured(QUERY_PER_ADDRESS), scope="citizen-query", methods=["POST"])
@limiter.shared_limit(
    configured(QUERY_PER_CASE), scope="citizen-query-case", key_func=case_number_key, methods=["POST"]
)
def query() -> ResponseReturnValue:
    if request.method == "GET":
        return render_template("query.html", values={}, result=None)
    case_no = request.form.get("case_no", "").strip()[:80]
    identifier = request.form.get("id_number", "").strip().upper()[:40]
    # The ID number is never echoed back into the page: it is the secret half of the pair.
    values = {"case_no": case_no}
    if not case_no or not identifier:
        error = both(lazy_gettext("请输入受理编号和证件号码"))
        return render_template("query.html", values=values, result=None, error=error), 400
    try:
        result = citizen_progress(case_no, identifier)
    except DomainError as exc:
        return render_template("query.html", values=values, result=None, error=bilingual(exc)), STATUS[exc.kind]
    # Issue 12: every use of the applicant's data at this node (who, where, for which case).
    service = context().identity_service
    uses = service.uses_of(identifier) if service is not None else None
    return render_template("query.html", values=values, result=result, data_uses=uses)
