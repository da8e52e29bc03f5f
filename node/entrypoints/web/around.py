"""Around the case (issue 14): 智能问答, appointments and queue numbers, 好差评 and rectification, the kiosk.

Two blueprints: ``around_api`` under ``/api/v1`` (JSON, bilingual errors) and ``around`` for the
pages. The public pages (assistant, kiosk, rating pad) talk to the public JSON routes from the
browser; the staff pages (queue, rectification) are forms with the CSRF token like every staff page.
Public routes that create something are rate-limited per client address.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import lazy_gettext
from werkzeug.exceptions import HTTPException

from node.bootstrap import AroundTheCase
from node.domain.assistant import normalise_question
from node.domain.case import ACCEPTOR, ADMIN, APPROVER, OPS, SUPERVISOR
from node.domain.errors import DomainError, ErrorKind
from node.entrypoints.web.auth import staff_page
from node.entrypoints.web.http import (
    context,
    domain_error_json,
    error_response,
    json_body,
    json_http_error,
    require_role,
)
from node.entrypoints.web.i18n import bilingual, both
from node.entrypoints.web.idempotency import idempotent
from node.entrypoints.web.limits import limiter
from node.service_layer.appointments import visit_code

api = Blueprint("around_api", __name__, url_prefix="/api/v1")
pages = Blueprint("around", __name__)

# Public creating routes: a kiosk or a family books a few times an hour; a script is stopped early.
PUBLIC_WRITES = "20 per minute;200 per hour"
PUBLIC_READS = "120 per minute"
WINDOW_ROLES = (ACCEPTOR, APPROVER, ADMIN)
RECTIFY_ROLES = (APPROVER, SUPERVISOR, ADMIN)
FIGURE_ROLES = (SUPERVISOR, OPS, ADMIN)
MAX_ANSWER_CHARS = 2000


def services() -> AroundTheCase:
    around = context().around
    if around is None:
        raise DomainError(
            "service_unavailable", "本节点未开通该服务", "this service is not offered by this node", ErrorKind.NOT_FOUND
        )
    return around


api.register_error_handler(HTTPException, json_http_error)


api.register_error_handler(DomainError, domain_error_json)


# --- 智能问答 -------------------------------------------------------------------------------------------------


@api.get("/assistant")
@limiter.limit(PUBLIC_READS)
def assistant() -> ResponseReturnValue:
    reply = services().assistant(request.args.get("q"))
    return jsonify(reply)


@api.post("/assistant/questions")
@limiter.limit(PUBLIC_WRITES)
@idempotent
def ask_a_person() -> ResponseReturnValue:
    body = json_body()
    question = normalise_question(body.get("question"))
    asked, secret = services().questions.ask(question, services().appointments.clock())
    return jsonify({"question_id": asked.question_id, "code": secret, "asked_at": asked.for_asker()["asked_at"]}), 201


@api.get("/assistant/questions/<question_id>")
@limiter.limit(PUBLIC_READS)
def read_answer(question_id: str) -> ResponseReturnValue:
    code = request.args.get("code", "")
    if len(question_id) > 32 or len(code) > 64:
        return error_response("question_not_found", "没有找到该问题，请核对编号和查询码", "no such question", 404)
    return jsonify(services().questions.for_asker(question_id, code).for_asker())


@api.get("/assistant/questions")
@require_role(SUPERVISOR, ADMIN, ACCEPTOR)
def waiting_questions() -> ResponseReturnValue:
    return jsonify({"questions": [q.for_asker() for q in services().questions.waiting()]})


@api.post("/assistant/questions/<question_id>/answer")
@require_role(SUPERVISOR, ADMIN, ACCEPTOR)
def answer_question(question_id: str) -> ResponseReturnValue:
    answer = _text(json_body().get("answer"), MAX_ANSWER_CHARS, "答复", "answer")
    answered = services().questions.answer(question_id[:32], answer, g.actor.username, services().appointments.clock())
    return jsonify(answered.for_asker())


def _text(value: object, limit: int, zh: str, en: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise DomainError(
            f"invalid_{en.replace(' ', '_')}",
            f"请填写{zh}（{limit}字以内）",
            f"give the {en} (at most {limit} characters)",
        )
    return value.strip()


# --- appointments and queue numbers -------------------------------------------------------------------------


@api.get("/appointments/slots")
@limiter.limit(PUBLIC_READS)
def slots() -> ResponseReturnValue:
    node = request.args.get("node") or context().config.code
    return jsonify(services().appointments.slots(node, request.args.get("date"), request.args.get("matter_code")))


@api.post("/appointments")
@limiter.limit(PUBLIC_WRITES)
@idempotent
def book() -> ResponseReturnValue:
    body = json_body()
    appointment = services().appointments.book(
        body.get("node") or context().config.code, body.get("matter_code"), body.get("start"), body.get("id_number")
    )
    return jsonify(appointment.to_dict()), 201


@api.post("/appointments/<appointment_id>/cancel")
@limiter.limit(PUBLIC_WRITES)
def cancel(appointment_id: str) -> ResponseReturnValue:
    cancelled = services().appointments.cancel(appointment_id, json_body().get("id_number"))
    return jsonify(cancelled.to_dict())


@api.post("/queue/tickets")
@limiter.limit(PUBLIC_WRITES)
@idempotent
def take_number() -> ResponseReturnValue:
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict):
        raise DomainError("invalid_json", "请求体必须是 JSON 对象", "the request body must be a JSON object")
    ticket = services().appointments.take_number(
        body.get("matter_code"), body.get("appointment_id"), body.get("id_number")
    )
    return jsonify({**ticket.to_dict(), "visit_code": visit_code(ticket.ticket_id)}), 201


@api.get("/queue")
@limiter.limit(PUBLIC_READS)
def queue() -> ResponseReturnValue:
    view = services().appointments.queue()
    view.pop("tickets")  # the hall screen shows numbers being called and how many wait, nothing else
    return jsonify(view)


@api.post("/queue/call")
@require_role(*WINDOW_ROLES)
def call_next() -> ResponseReturnValue:
    body = json_body()
    group = body.get("group")
    if group is not None and not isinstance(group, str):
        raise DomainError("invalid_group", "窗口组应为文字编码", "group must be a window group's code")
    ticket = services().appointments.call_next(group, body.get("window"))
    if ticket is None:
        return jsonify({"ticket": None, "message_zh": "暂无等候的号码", "message_en": "nobody is waiting"})
    return jsonify({"ticket": ticket.to_dict()})


@api.post("/queue/tickets/<ticket_id>/finish")
@require_role(*WINDOW_ROLES)
def finish_ticket(ticket_id: str) -> ResponseReturnValue:
    return jsonify(services().appointments.finish(ticket_id, json_body().get("outcome")).to_dict())


# --- 好差评 ---------------------------------------------------------------------------------------------------


@api.post("/ratings/visits")
@limiter.limit(PUBLIC_WRITES)
@idempotent
def rate_visit() -> ResponseReturnValue:
    body = json_body()
    appointments = services().appointments
    ticket = appointments.ticket_by_code(body["code"]) if "code" in body else appointments.ticket(body.get("ticket_id"))
    if ticket.status.value not in ("called", "served"):
        raise DomainError(
            "visit_not_served",
            "该号码尚未办理，办理后再评价",
            "this number has not been served yet",
            ErrorKind.CONFLICT,
        )
    rating = services().ratings.rate_visit(
        ticket.ticket_id, ticket.window, None, body.get("level"), body.get("comment")
    )
    return jsonify({"rating_id": rating.rating_id, "level": int(rating.level), "label_zh": rating.level.label_zh}), 201


@api.get("/ratings/figures")
@require_role(*FIGURE_ROLES)
def rating_figures() -> ResponseReturnValue:
    return jsonify(
        {"by": request.args.get("by", "node"), "figures": services().ratings.figures(request.args.get("by", "node"))}
    )


@api.get("/rectifications")
@require_role(*RECTIFY_ROLES)
def rectifications() -> ResponseReturnValue:
    return jsonify({"tickets": services().ratings.tickets()})


@api.post("/rectifications/<ticket_id>/<step>")
@require_role(*RECTIFY_ROLES)
def rectification_step(ticket_id: str, step: str) -> ResponseReturnValue:
    return jsonify(_rectify(ticket_id, step, json_body()))


def _rectify(ticket_id: str, step: str, values: dict[str, Any]) -> dict[str, Any]:
    ratings, actor = services().ratings, g.actor
    if step == "contact":
        return ratings.contact(ticket_id, actor.username, values.get("note"))
    if step == "outcome":
        return ratings.outcome(ticket_id, actor.username, values.get("outcome"))
    if step == "appeal":
        return ratings.appeal(ticket_id, actor.username, values.get("reason"))
    if step == "decision":
        upheld = values.get("upheld")
        if isinstance(upheld, str):
            upheld = {"true": True, "false": False}.get(upheld)
        return ratings.decide_appeal(ticket_id, actor.username, actor.role, upheld, values.get("decision"))
    raise DomainError("unknown_step", "没有这个整改步骤", "no such rectification step", ErrorKind.NOT_FOUND)


# --- pages --------------------------------------------------------------------------------------------------


@pages.get("/assistant")
def assistant_page() -> ResponseReturnValue:
    return render_template("assistant.html")


@pages.get("/kiosk")
def kiosk() -> ResponseReturnValue:
    response = render_template("kiosk.html")
    # Never shows the previous person's data: nothing of it may come back from a cache.
    return response, 200, {"Cache-Control": "no-store"}


@pages.get("/rate/<ticket_id>")
def rating_pad(ticket_id: str) -> ResponseReturnValue:
    ticket = services().appointments.ticket(ticket_id[:64])
    return render_template("rate.html", ticket=ticket), 200, {"Cache-Control": "no-store"}


@pages.route("/queue", methods=["GET", "POST"])
@staff_page(*WINDOW_ROLES)
def queue_page() -> ResponseReturnValue:
    error = called = None
    if request.method == "POST":
        try:
            if request.form.get("finish"):
                services().appointments.finish(request.form.get("finish"), request.form.get("outcome"))
            else:
                called = services().appointments.call_next(request.form.get("group"), request.form.get("window"))
                if called is None:
                    error = both(lazy_gettext("暂无等候的号码"))
        except DomainError as exc:
            error = bilingual(exc)
    view = services().appointments.queue()
    plan = services().appointments.plans.for_node(context().config.code)
    status = 400 if error and request.method == "POST" and called is None and not request.form.get("finish") else 200
    return render_template("queue.html", view=view, groups=plan.groups, called=called, error=error), status


@pages.route("/rectifications", methods=["GET", "POST"])
@staff_page(*RECTIFY_ROLES)
def rectifications_page() -> ResponseReturnValue:
    error = None
    if request.method == "POST":
        values = request.form.to_dict()
        try:
            _rectify(values.get("ticket_id", ""), values.get("step", ""), values)
            return redirect(url_for("around.rectifications_page"))
        except DomainError as exc:
            error = bilingual(exc)
    tickets = services().ratings.tickets()
    return render_template("rectifications.html", tickets=tickets, error=error), 400 if error else 200
