"""Results without a trip (issue 15): fees, sealed result PDFs, public verification, postal tracking.

Two blueprints under ``results``:

- ``results`` itself: machine endpoints — the payment gateway's notify (``POST /payments/notify``:
  the raw body is verified before anything of it is read), the courier's tracking callback
  (``POST /post/callback``, likewise) and the API ``GET /api/v1/cases/<no>/result.pdf`` (staff token of
  a node holding the case) and ``GET|POST /api/v1/cases/<no>/payment``;
- ``results.pages``: pages signed in by session (CSRF-checked like every page): the public ``/verify``
  page (upload a PDF or follow its QR link), the applicant's ``/hall/fees`` (pay, download the result
  with the case number and ID number), and the staff forms of the case page (issue a payment order,
  seal again, send by post, refresh tracking, download the PDF).

The views only parse, call :class:`node.service_layer.results.ResultService` and render.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, flash, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import lazy_gettext

from node.domain.case import APPROVER, PAYMENT_STATE_LABELS, POST_CODE_LABELS
from node.domain.errors import DomainError, ErrorKind
from node.domain.seal import Verdict, VerdictStatus
from node.entrypoints.web.auth import STAFF_ROLES, staff_page
from node.entrypoints.web.http import STATUS, context, domain_error_json, error_page, json_body, require_role
from node.entrypoints.web.i18n import bilingual, both, lang
from node.entrypoints.web.idempotency import idempotent
from node.entrypoints.web.limits import QUERY_PER_ADDRESS, QUERY_PER_CASE, case_number_key, configured, limiter
from node.service_layer.results import ResultService

log = logging.getLogger("tongban.web.results")

blueprint = Blueprint("results", __name__)
pages = Blueprint("pages", __name__)
MAX_UPLOAD = 1024 * 1024  # the app's request limit; a result PDF is a few tens of KiB
VERDICT_LABELS = {
    VerdictStatus.VALID: lazy_gettext("有效"),
    VerdictStatus.TAMPERED: lazy_gettext("已被篡改"),
    VerdictStatus.REVOKED: lazy_gettext("已吊销"),
    VerdictStatus.EXPIRED: lazy_gettext("已过期"),
    VerdictStatus.UNKNOWN_ISSUER: lazy_gettext("签发者不明"),
}


def results() -> ResultService:
    service = context().results
    if service is None:  # pragma: no cover - the web process always builds it
        raise DomainError(
            "results_unavailable", "本进程不提供此功能", "not available in this process", ErrorKind.CONFLICT
        )
    return service


def _pdf(data: bytes, case_no: str, what: str = "result") -> Response:
    response = Response(data, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="{case_no}-{what}.pdf"'
    response.headers["Cache-Control"] = "no-store"  # it names the applicant
    return response


# --- machine endpoints ---------------------------------------------------------------------------------


@blueprint.post("/payments/notify")
def payment_notify() -> ResponseReturnValue:
    """The gateway's signed notify: 200 ``success`` once applied (or already applied), else a reason."""
    raw = request.get_data(cache=False)
    status, body = results().handle_notify(request.headers, raw)
    content_type = "text/plain; charset=utf-8" if status == 200 else "application/json; charset=utf-8"
    return Response(body, status=status, content_type=content_type)


@blueprint.post("/post/callback")
def courier_callback() -> ResponseReturnValue:
    raw = request.get_data(cache=False)
    try:
        results().handle_courier_callback(request.headers, raw)
    except DomainError as exc:
        log.warning("courier callback refused: %s", exc.code)
        return jsonify(exc.to_dict()), STATUS[exc.kind]
    return jsonify({"ok": True})


@blueprint.get("/api/v1/cases/<case_no>/result.pdf")
@require_role(*STAFF_ROLES)
def api_result_pdf(case_no: str) -> ResponseReturnValue:
    try:
        return _pdf(results().result_pdf(case_no), case_no)
    except DomainError as exc:
        return domain_error_json(exc)


@blueprint.get("/api/v1/cases/<case_no>/receipt.pdf")
@require_role(*STAFF_ROLES)
def api_receipt_pdf(case_no: str) -> ResponseReturnValue:
    try:
        return _pdf(results().receipt_pdf(case_no), case_no, "receipt")
    except DomainError as exc:
        return domain_error_json(exc)


def _payment_json(case_no: str) -> dict[str, Any]:
    view = results().payment_of(context().cases.load(case_no))
    if view is None:
        return {"case_no": case_no, "payment": None}
    return {
        "case_no": case_no,
        "payment": {
            "order_id": view.order_id,
            "state": view.state,
            "total_fen": view.total_fen,
            "payment_code": view.payment_code,
            "pay_url": view.pay_url,
            "items": view.items,
            "reason_code": view.reason_code or None,
        },
    }


@blueprint.get("/api/v1/cases/<case_no>/payment")
@require_role(*STAFF_ROLES)
def api_payment(case_no: str) -> ResponseReturnValue:
    try:
        return jsonify(_payment_json(case_no))
    except DomainError as exc:
        return domain_error_json(exc)


@blueprint.post("/api/v1/cases/<case_no>/payment")
@require_role(*STAFF_ROLES)
@idempotent
def api_request_payment(case_no: str) -> ResponseReturnValue:
    try:
        results().request_payment(case_no)
        return jsonify(_payment_json(case_no)), 201
    except DomainError as exc:
        return domain_error_json(exc)


@blueprint.post("/api/v1/cases/<case_no>/post")
@require_role(*STAFF_ROLES)
@idempotent
def api_send_by_post(case_no: str) -> ResponseReturnValue:
    """``{name, phone, address}`` of the recipient → the waybill (``{case_no, post}``)."""
    try:
        body = json_body()
        values = [body.get(key) for key in ("name", "phone", "address")]
        if not all(isinstance(value, str) for value in values):
            raise DomainError(
                "post_address_invalid", "请填写收件人姓名、电话和地址", "give the recipient's name, phone and address"
            )
        case = results().send_by_post(case_no, *(str(value)[:400] for value in values))
    except DomainError as exc:
        return domain_error_json(exc)
    post = {k: v for k, v in (case.post or {}).items() if k in ("waybill_no", "code", "seq", "at")}
    return jsonify({"case_no": case_no, "post": post}), 201


# --- public verification ---------------------------------------------------------------------------------


def _verdict_view(verdict: Verdict) -> dict[str, Any]:
    return {
        "status": verdict.status.value,
        "label": VERDICT_LABELS[verdict.status],
        "issuer": verdict.issuer,
        "document_id": verdict.document_id,
        "seal_name": verdict.seal_name,
        "details": {"zh": verdict.details_zh, "en": verdict.details_en},
    }


@pages.route("/verify", methods=["GET", "POST"])
@limiter.shared_limit(configured(QUERY_PER_ADDRESS), scope="verify", methods=["POST"])
def verify() -> ResponseReturnValue:
    """Anyone: upload a result PDF, or arrive from its QR code (``/verify?v=1&d=…``)."""
    if request.method == "GET":
        if "d" not in request.args:
            return render_template("verify.html", verdict=None, source=None)
        payload = "/verify?" + request.query_string.decode("ascii", "replace")[:1024]
        verdict = results().verify_qr(payload)
        return render_template("verify.html", verdict=_verdict_view(verdict), source="qr")
    upload = request.files.get("file")
    data = upload.read(MAX_UPLOAD + 1) if upload else b""
    if not data:
        error = both(lazy_gettext("请选择要核验的 PDF 文件"))
        return render_template("verify.html", verdict=None, source=None, error=error), 400
    verdict = results().verify_file(data)
    status = 200 if verdict.valid else 422
    return render_template("verify.html", verdict=_verdict_view(verdict), source="file"), status


# --- the applicant: fees and result ------------------------------------------------------------------------


@pages.route("/hall/fees", methods=["GET", "POST"])
@limiter.shared_limit(configured(QUERY_PER_ADDRESS), scope="citizen-query", methods=["POST"])
@limiter.shared_limit(
    configured(QUERY_PER_CASE), scope="citizen-query-case", key_func=case_number_key, methods=["POST"]
)
def hall_fees() -> ResponseReturnValue:
    """The applicant's fees and result: pay online, download the sealed result (case number + ID number)."""
    if request.method == "GET":
        return render_template("hall_fees.html", values={}, progress=None, payment=None)
    case_no = request.form.get("case_no", "").strip()[:80]
    identifier = request.form.get("id_number", "").strip().upper()[:40]
    values = {"case_no": case_no}  # the ID number is never echoed back into the page
    if not case_no or not identifier:
        error = both(lazy_gettext("请输入受理编号和证件号码"))
        return render_template("hall_fees.html", values=values, progress=None, payment=None, error=error), 400
    try:
        action = request.form.get("action")
        if action in ("download", "receipt"):
            receipt = action == "receipt"
            pdf = results().citizen_result_pdf(case_no, identifier, receipt=receipt)
            return _pdf(pdf, case_no, "receipt" if receipt else "result")
        progress, payment = results().citizen_payment(case_no, identifier)
    except DomainError as exc:
        page = render_template("hall_fees.html", values=values, progress=None, payment=None, error=bilingual(exc))
        return page, STATUS[exc.kind]
    return render_template("hall_fees.html", values=values, progress=progress, payment=payment)


# --- staff forms on the case page --------------------------------------------------------------------------


def _back(case_no: str, message: Any = None, error: DomainError | None = None) -> ResponseReturnValue:
    if error is not None:
        flash(bilingual(error), "error")
    elif message is not None:
        flash(both(message), "success")
    return redirect(url_for("pages.case", case_no=case_no), 303)


@pages.post("/cases/<case_no>/payment")
@staff_page()
def request_payment(case_no: str) -> ResponseReturnValue:
    try:
        view = results().request_payment(case_no)
    except DomainError as exc:
        return _back(case_no, error=exc)
    return _back(case_no, lazy_gettext("缴款码：%(code)s", code=view.payment_code_groups))


@pages.post("/cases/<case_no>/seal")
@staff_page(APPROVER)
def seal(case_no: str) -> ResponseReturnValue:
    try:
        results().seal(case_no)
    except DomainError as exc:
        return _back(case_no, error=exc)
    return _back(case_no, lazy_gettext("结果文书已加盖电子印章"))


@pages.post("/cases/<case_no>/licence/revoke")
@staff_page(APPROVER)
def revoke_licence(case_no: str) -> ResponseReturnValue:
    try:
        results().revoke_licence(case_no, request.form.get("reason", "")[:600], g.actor.department)
    except DomainError as exc:
        return _back(case_no, error=exc)
    return _back(case_no, lazy_gettext("电子证照已注销"))


@pages.post("/cases/<case_no>/post")
@staff_page()
def send_by_post(case_no: str) -> ResponseReturnValue:
    form = request.form
    try:
        case = results().send_by_post(
            case_no, form.get("name", "")[:100], form.get("phone", "")[:40], form.get("address", "")[:400]
        )
    except DomainError as exc:
        return _back(case_no, error=exc)
    waybill = (case.post or {}).get("waybill_no", "")
    return _back(case_no, lazy_gettext("已交寄，运单号 %(waybill)s", waybill=waybill))


@pages.post("/cases/<case_no>/post/refresh")
@staff_page()
def refresh_post(case_no: str) -> ResponseReturnValue:
    try:
        results().poll_post(case_no)
    except DomainError as exc:
        return _back(case_no, error=exc)
    return _back(case_no, lazy_gettext("已更新邮寄跟踪"))


@pages.get("/cases/<case_no>/result.pdf")
@staff_page()
def result_pdf(case_no: str) -> ResponseReturnValue:
    try:
        return _pdf(results().result_pdf(case_no), case_no)
    except DomainError as exc:
        return error_page(STATUS[exc.kind], bilingual(exc))


@pages.get("/cases/<case_no>/receipt.pdf")
@staff_page()
def receipt_pdf(case_no: str) -> ResponseReturnValue:
    try:
        return _pdf(results().receipt_pdf(case_no), case_no, "receipt")
    except DomainError as exc:
        return error_page(STATUS[exc.kind], bilingual(exc))


# --- what the case page shows --------------------------------------------------------------------------------


def results_panel(case_no: str) -> dict[str, Any] | None:
    """Fees, sealed result and post of a case, for the case page (None when there is nothing to show)."""
    service = context().results
    if service is None:
        return None
    try:
        case = context().cases.load(case_no)
    except DomainError:
        return None
    fees = service.fee_items(case)
    matter = service.matter_of(case)
    payment = service.payment_of(case)
    post = dict(case.post) if case.post else None
    decided = case.state.value in ("approved", "rejected")
    return {
        "fees": fees,
        "fee_total": sum(item.amount_fen for item in fees),
        "fee_due": matter.fee_due if matter else None,
        "unpaid_before_handling": bool(fees)
        and matter is not None
        and matter.fee_due == "on_acceptance"
        and case.state.value in ("accepted", "in_review", "supplement_requested")
        and (payment is None or payment.state not in ("succeeded",)),
        "payment": payment,
        "payment_label": PAYMENT_STATE_LABELS.get(payment.state, (payment.state,) * 2) if payment else None,
        "can_request_payment": bool(fees)
        and service.payments is not None
        and (payment is None or payment.state in ("failed", "cancelled", "closed")),
        "sealed": case.sealed_result,
        "receipt": case.receipt,
        "can_seal": decided and case.sealed_result is None,
        "post": post,
        "post_label": POST_CODE_LABELS.get(str(post.get("code")), ("", "")) if post else None,
        "post_failed": bool(post) and post.get("code") in ("delivery_failed", "returned"),
        "can_post": decided and post is None and service.courier is not None,
    }


def payment_state_label(state: str) -> str:
    zh, en = PAYMENT_STATE_LABELS.get(state, (state, state))
    return en if lang() == "en" else zh


@blueprint.app_context_processor
def _panel() -> dict[str, Any]:
    return {"results_panel": results_panel, "payment_state_label": payment_state_label}


blueprint.register_blueprint(pages)
