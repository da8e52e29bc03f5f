"""Results without a trip (issue 15): a case's fees, its sealed result document and its postal delivery.

This module owns what happens around a decision, as the case's own signed events:

- **Fees.** A matter's fee items (catalogue) become a payment order when they fall due — at acceptance
  or once approved, per matter (``Matter.fee_due``) — with a payment code and the gateway's pay page;
  every stored change of the order's state (paid, failed, closed, refunded …) is recorded on the case
  (``payment_requested`` / ``payment_updated``: order id, state and amounts, never the payer). A paid
  case that is rejected or withdrawn is refunded in full; an unpaid order of such a case is cancelled.
- **The sealed result.** When the handling node approves, the result document is rendered from the
  matter's template and sealed with the handling department's seal; the PDF travels with the case in
  a ``result_sealed`` event, encrypted with the federation's data key (it names the applicant), so
  the accepting node can hand it over too. Anyone verifies it offline or on ``/verify``.
- **Post.** Sending the result by post creates a courier waybill; verified tracking callbacks (or a
  poll) become ``post_tracked`` events, and the courier's "delivered" delivers the case.

Events are stamped with the node's clock, chained and signed exactly as :mod:`node.service_layer.cases`
writes them, then published as :class:`CaseWritten`, so projection and replication treat them alike.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from node.adapters.courier import CourierClient, CourierSettings, Party, TrackingEvent, WaybillBook
from node.adapters.pii import PersonalData
from node.adapters.result_pdf import (
    ResultContent,
    parse_qr_payload,
    seal_result,
    verify_qr_against,
    verify_result,
)
from node.adapters.seal import SealBook, sign_record
from node.adapters.seal_keys import TrustBundle
from node.domain.case import Case, CaseState, check_recorded, fold
from node.domain.catalogue import Matter
from node.domain.errors import DomainError, ErrorKind
from node.domain.events import Event, EventType
from node.domain.identifiers import make_credit_code
from node.domain.licence import Licence, make_identifier, revocation_record
from node.domain.messages import CaseWritten
from node.domain.packages import catalogue_packages
from node.domain.payment import FeeItem, PaymentOrder, PaymentState, fee_items_for_matter
from node.domain.seal import Verdict, VerdictStatus
from node.service_layer.cases import CHINA, CaseService, china_today
from node.service_layer.commands import Actor
from node.service_layer.payments import PaymentService, ReconcileReport

log = logging.getLogger("tongban.results")

SYSTEM_RESULTS = Actor("system", "approver", None)  # the node itself records payment, seal and post steps
RESULT_SUFFIX = ".R1"  # document id = case number + suffix: a QR's document id names its case
MAX_ADDRESS = 200
MAX_PHONE = 20
MAX_NAME = 50
# Order states worth a line on the case: "paying" (the pay page was opened) is not.
RECORDED_PAYMENT_STATES = frozenset(PaymentState) - {PaymentState.PAYING}


@dataclass(frozen=True)
class ReconcilePayments:
    """The beat job's command: settle orders whose notify never came (older than ``older_than_s``)."""

    older_than_s: float = 300.0


@dataclass(frozen=True)
class PollPost:
    """The beat job's command: ask the courier about every parcel still on its way (callbacks may be lost)."""


POST_DONE = frozenset({"delivered", "returned", "cancelled"})


def _not_found(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.NOT_FOUND)


LICENCE_VALIDITY = timedelta(days=5 * 365)
_LICENCE_NAME = re.compile(r"许可$|资格|注册")


def template_for(matter: Matter) -> str:
    """Which result template a matter's approval produces: a licence (许可证) for a 行政许可 that grants a
    licence, qualification or registration, a decision letter for another 行政许可, a certificate (证明)
    for the rest."""
    if matter.matter_type == "行政许可":
        return "licence" if _LICENCE_NAME.search(matter.name) else "decision"
    return "certificate"


def department_credit_code(node_code: str, department_code: str) -> str:
    """A department's unified social credit code. The demo's departments have none on record: a stable
    synthetic one (registration type 11 机关, the node's county code, an organisation code from a hash)."""
    digest = hashlib.sha256(f"{node_code}/{department_code}".encode()).hexdigest()
    organisation = "".join(str(int(ch, 16) % 10) for ch in digest[:9])
    return make_credit_code(f"11{node_code[:6]}{organisation}")


def licence_identifier(matter: Matter, city: str, node_code: str, case_no: str) -> str:
    """GB/T 36904 identifier: type = the city department's code + the matter's serial, issuer = ours."""
    type_code = department_credit_code(city, matter.department) + (re.sub(r"[^0-9]", "", matter.code)[-3:] or "000")
    serial = re.sub(r"[^0-9A-Z]", "", case_no.upper())[-40:]
    return make_identifier(type_code, department_credit_code(node_code, matter.department), serial, 1)


def document_id_for(case_no: str) -> str:
    return f"{case_no}{RESULT_SUFFIX}"


def receipt_id_for(order: PaymentOrder) -> str:
    return f"{order.case_no}.P{order.order_id.removeprefix('po_')[:12]}"


def case_of_document(document_id: str) -> str | None:
    """The case a result (``<case>.R1``) or receipt (``<case>.P<order>``) document belongs to."""
    case_no, dot, _ = document_id.rpartition(".")
    return case_no if dot and case_no else None


SEALED_DOCUMENTS = (EventType.RESULT_SEALED, EventType.RECEIPT_ISSUED)


def fen_text(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


@dataclass(frozen=True)
class PaymentView:
    """What a page shows about a case's fees (no payer identity)."""

    order_id: str
    state: str
    total_fen: int
    payment_code: str
    pay_url: str
    items: list[dict[str, Any]]
    reason_code: str = ""

    @property
    def total_yuan(self) -> str:
        return fen_text(self.total_fen)

    @property
    def payment_code_groups(self) -> str:
        code = self.payment_code
        return " ".join(code[i : i + 4] for i in range(0, len(code), 4))


class ResultService:
    def __init__(
        self,
        cases: CaseService,
        personal_data: PersonalData,
        seals: SealBook,
        trust: TrustBundle,
        verify_base: str,
        publish: Callable[[CaseWritten], None],
        payments: PaymentService | None = None,
        courier: CourierSettings | None = None,
        waybills: WaybillBook | None = None,
        today: Callable[[], date] = china_today,
    ) -> None:
        self.cases = cases
        self.node = cases.node
        self.pii = personal_data
        self.seals = seals
        self.trust = trust
        self.verify_base = verify_base
        self.publish = publish
        self.payments = payments
        self.courier_settings = courier
        self.courier: CourierClient | None = courier.client() if courier else None
        self.waybills = waybills
        self.today = today

    # --- writing ------------------------------------------------------------------------------------

    def _history(self, case_no: str) -> list[Event]:
        events = self.cases.verifier.verified_case(case_no).events
        if not events:
            raise _not_found("case_not_found", f"本节点没有案件 {case_no}", f"this node holds no case {case_no}")
        return events

    def record(self, case_no: str, kind: EventType, payload: Mapping[str, Any]) -> Case:
        """Append one system event (checked against the case's rules), sign it, and say so."""
        events = self._history(case_no)
        case = fold(events)
        check_recorded(case, kind, self.node)
        clock = self.cases.clock
        clock.observe(case.last_hlc)
        event = Event(
            case_no=case_no,
            type=kind,
            actor_id=SYSTEM_RESULTS.username,
            actor_role=SYSTEM_RESULTS.role,
            node=self.node,
            hlc=clock.tick().to_str(),
            prev_hash=case.last_event_hash,
            payload=dict(payload),
        )
        event = event.with_signature(self.cases.identity.sign(event.hash))
        self.cases.events.append([event])
        self.publish(CaseWritten((event,), (*events, event)))
        return fold([*events, event])

    # --- reactions ----------------------------------------------------------------------------------

    def on_case_written(self, message: CaseWritten) -> None:
        """Fees due, a seal to apply, a refund to make: after this node wrote acceptance or a decision.

        The case's own write has already succeeded; a failure here (gateway down, no seal) is logged and
        can be retried from the case page — it must not fail the person's request.
        """
        for event in message.written:
            if event.node != self.node:
                continue
            try:
                if event.type is EventType.ACCEPTED:
                    self._fees_due(event.case_no, "on_acceptance")
                elif event.type is EventType.APPROVED:
                    self._fees_due(event.case_no, "after_approval")
                    self.seal(event.case_no)
                elif event.type is EventType.REJECTED:
                    self.seal(event.case_no)
                    self.settle_fees_of_ended_case(event.case_no, event.payload.get("reason") or "case rejected")
                elif event.type is EventType.WITHDRAWN:
                    self.settle_fees_of_ended_case(event.case_no, event.payload.get("reason") or "case withdrawn")
            except Exception:  # reactions never undo the write they react to: logged, retried by hand
                log.exception("reaction to %s of case %s failed", event.type, event.case_no)

    # --- fees ---------------------------------------------------------------------------------------

    def matter_of(self, case: Case) -> Matter | None:
        catalogue = self.cases.catalogue
        return catalogue.get(case.matter_code) if case.matter_code in catalogue else None

    def fee_items(self, case: Case) -> list[FeeItem]:
        """The fees this case's order charges: its matter's, or for a 一件事 package the whole package's.

        一次性缴费: a package's fees are all charged once, on its first sub-case (when that sub-case's
        fee falls due); the other sub-cases charge nothing of their own.
        """
        package = case.package
        if package is not None and isinstance(package.get("code"), str):
            if package.get("position") != 0:
                return []
            catalogue = self.cases.catalogue
            found = catalogue_packages(catalogue).get(package["code"])
            if found is not None:
                return [item for code in found.matters for item in fee_items_for_matter(catalogue.get(code))]
        matter = self.matter_of(case)
        return fee_items_for_matter(matter) if matter is not None else []

    def _fees_due(self, case_no: str, when: str) -> None:
        case = self.cases.load(case_no)
        matter = self.matter_of(case)
        if self.payments is None or matter is None or matter.fee_due != when or not self.fee_items(case):
            return
        self.request_payment(case_no)

    def request_payment(self, case_no: str, channel: str = "window") -> PaymentView:
        """The case's open payment order (issued once, at the gateway too) and its pay page."""
        if self.payments is None:
            raise DomainError(
                "payments_not_configured",
                "本节点未接入支付平台，请在窗口现场缴费",
                "this node is not connected to a payment gateway",
                ErrorKind.CONFLICT,
            )
        case = self.cases.load(case_no)
        items = self.fee_items(case)
        if not items:
            raise DomainError("no_fee", "该事项不收费", "this matter charges no fee", ErrorKind.CONFLICT)
        matter = self.matter_of(case)
        description = f"{matter.name if matter else case.matter_code} {case_no}"[:100]
        order, pay_url = self.payments.create_for_case(
            case_no, items, str(case.applicant.get("key")), channel, description
        )
        if (case.payment or {}).get("order_id") != order.order_id:
            self.record(case_no, EventType.PAYMENT_REQUESTED, self._order_payload(order, pay_url))
        return self._view(order, pay_url)

    @staticmethod
    def _order_payload(order: PaymentOrder, pay_url: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "order_id": order.order_id,
            "state": order.state.value,
            "total_fen": order.total_fen,
            "refunded_fen": order.refunded_fen,
            "payment_code": order.payment_code,
            "items": [item.to_dict() for item in order.items],
        }
        if order.reason_code:
            payload["reason_code"] = order.reason_code
        if pay_url:
            payload["pay_url"] = pay_url
        return payload

    @staticmethod
    def _view(order: PaymentOrder, pay_url: str) -> PaymentView:
        return PaymentView(
            order.order_id,
            order.state.value,
            order.total_fen,
            order.payment_code,
            pay_url,
            [item.to_dict() for item in order.items],
            order.reason_code,
        )

    def on_payment_change(self, order: PaymentOrder) -> None:
        """Record a stored change of an order's state on its case (called once per change)."""
        if order.state not in RECORDED_PAYMENT_STATES:
            return
        try:
            self.record(order.case_no, EventType.PAYMENT_UPDATED, self._order_payload(order))
        except DomainError as error:  # the case moved on where this node may no longer write: keep the order
            log.warning("payment %s of case %s not recorded on the case: %s", order.order_id, order.case_no, error.code)
            return
        if order.state is PaymentState.SUCCEEDED and order.times_settled == 1:
            try:
                self.issue_receipt(order)
            except Exception:  # the payment stands; the receipt can be issued again from the case page
                log.exception("receipt of %s not issued", order.order_id)

    def issue_receipt(self, order: PaymentOrder) -> Case:
        """The electronic receipt (财政电子票据) of a paid order, sealed by the collecting department, once."""
        events = self._history(order.case_no)
        document_id = receipt_id_for(order)
        case = fold(events)
        if any(e.type is EventType.RECEIPT_ISSUED and e.payload.get("document_id") == document_id for e in events):
            return case
        matter = self.matter_of(case)
        if matter is None:
            raise _not_found("unknown_matter", "事项不在目录中", "the matter is not in the catalogue")
        department = self.cases.catalogue.department(matter.department)
        seal = self.seals.seal_for(department.code, department.name_zh)
        content = ResultContent(
            document_id=document_id,
            kind="receipt",
            matter_code=matter.code,
            matter_name=matter.name,
            case_no=order.case_no,
            holder_name=self.cases.applicant_name(case),
            holder_key=str(case.applicant.get("key")),
            issuer_name=seal.name,
            issued_on=self.today(),
            items={"缴款金额": fen_text(order.total_fen), "缴款码": order.payment_code, "订单号": order.order_id},
        )
        pdf = seal_result(seal, content, self.verify_base)
        payload = {
            "document_id": document_id,
            "order_id": order.order_id,
            "issuer": seal.issuer,
            "sealed_pdf": self.pii.seal({"pdf": base64.b64encode(pdf).decode("ascii")}),
        }
        return self.record(order.case_no, EventType.RECEIPT_ISSUED, payload)

    def handle_notify(self, headers: Any, raw_body: bytes) -> tuple[int, str]:
        """The gateway's notify: verified over the raw body first, applied once (the case event with it)."""
        if self.payments is None:
            return 404, "no payment gateway here"
        answer = self.payments.handle_notify(headers, raw_body)
        return answer.status, answer.body

    def reconcile(self, command: ReconcilePayments | None = None) -> ReconcileReport | None:
        """Settle orders whose notify never came, by asking the gateway (the beat job's command)."""
        if self.payments is None:
            return None
        older_than = timedelta(seconds=(command or ReconcilePayments()).older_than_s)
        report = self.payments.reconcile(older_than)
        for anomaly in report.anomalies:
            log.warning("payment anomaly %s on %s: %s", anomaly.kind, anomaly.order_id, anomaly.detail)
        return report

    def settle_fees_of_ended_case(self, case_no: str, reason: str) -> list[PaymentOrder]:
        """A rejected or withdrawn case: refund what was paid, cancel what was not."""
        if self.payments is None:
            return []
        changed = self.payments.refund_rejected_case(case_no, reason)
        for order in self.payments.repository.for_case(case_no):
            if order.is_open:
                try:
                    changed.append(self.payments.cancel(order.order_id))
                except DomainError as error:  # paid at this very moment: the next rejection handling refunds
                    log.warning("could not cancel %s: %s", order.order_id, error.code)
        return changed

    def payment_of(self, case: Case) -> PaymentView | None:
        """The case's latest payment order as its events tell it (at any node holding the case)."""
        p = case.payment
        if not p:
            return None
        return PaymentView(
            str(p["order_id"]),
            str(p["state"]),
            int(p["total_fen"]),
            str(p.get("payment_code") or ""),
            str(p.get("pay_url") or ""),
            list(p.get("items") or []),
            str(p.get("reason_code") or ""),
        )

    # --- sealed results -----------------------------------------------------------------------------

    def seal(self, case_no: str) -> Case:
        """Render and seal the decided case's result with the handling department's seal (once): the
        matter's result when approved, a decision not to grant (不予许可决定书) with the reason when rejected."""
        case = self.cases.load(case_no)
        if case.sealed_result is not None:
            return case
        if case.state not in (CaseState.APPROVED, CaseState.REJECTED):
            raise DomainError(
                "result_not_ready",
                "案件尚未作出决定，不能出具结果文书",
                "the case is not decided: no result document yet",
                ErrorKind.CONFLICT,
            )
        rejected = case.state is CaseState.REJECTED
        matter = self.matter_of(case)
        if matter is None:
            raise _not_found("unknown_matter", "事项不在目录中", "the matter is not in the catalogue")
        department = self.cases.catalogue.department(matter.department)
        seal = self.seals.seal_for(department.code, department.name_zh)
        accepted_on = datetime.fromisoformat(case.accepted_at).astimezone(CHINA).date() if case.accepted_at else None
        kind = "rejection" if rejected else template_for(matter)
        today = self.today()
        licence_id = licence_identifier(matter, self.cases.tree.root, self.node, case_no) if kind == "licence" else None
        valid_until = today + LICENCE_VALIDITY if licence_id else None
        content = ResultContent(
            document_id=document_id_for(case_no),
            kind=kind,
            matter_code=matter.code,
            matter_name=matter.name,
            case_no=case_no,
            holder_name=self.cases.applicant_name(case),
            holder_key=str(case.applicant.get("key")),
            issuer_name=seal.name,
            issued_on=today,
            applied_on=accepted_on,
            valid_until=valid_until,
            licence_id=licence_id,
            items={"不予办理理由": str(case.reason or "")[:500]} if rejected else {"办理结果": "准予办理"},
        )
        pdf = seal_result(seal, content, self.verify_base)
        payload: dict[str, Any] = {
            "document_id": content.document_id,
            "issuer": seal.issuer,
            "kind": kind,
            # The PDF names the applicant: it travels encrypted with the federation's data key.
            "sealed_pdf": self.pii.seal({"pdf": base64.b64encode(pdf).decode("ascii")}),
        }
        if licence_id:
            # The electronic licence record (GB/T 36904 identifier, holder by key only), signed by the
            # issuing department: checkable offline with the city CA certificate alone.
            licence = Licence(
                identifier=licence_id,
                type_name=matter.name[:100],
                holder_key=str(case.applicant.get("key")),
                holder_kind=str(case.applicant.get("kind") or "person"),
                issuer_node=self.node,
                issuer_department=department.code,
                issuer_name=seal.name,
                issued_on=today,
                valid_from=today,
                valid_until=valid_until,
                data_items={"许可事项": matter.name, "受理编号": case_no},
                document_id=content.document_id,
            )
            payload["licence"] = sign_record(seal, licence.to_record())
        return self.record(case_no, EventType.RESULT_SEALED, payload)

    def revoke_licence(self, case_no: str, reason: str, department: str | None) -> Case:
        """注销/吊销: the issuing department revokes the case's licence; a signed record, as a case event."""
        reason = (reason or "").strip()
        if not reason or len(reason) > 500:
            raise DomainError("reason_required", "注销证照必须填写理由（500字以内）", "a revocation needs a reason")
        events = self._history(case_no)
        sealed = [e for e in events if e.type is EventType.RESULT_SEALED and isinstance(e.payload.get("licence"), dict)]
        if not sealed:
            raise _not_found("no_licence", "该案件没有电子证照", "this case issued no licence")
        licence = Licence.from_record(max(sealed, key=lambda e: e.hlc).payload["licence"]["record"])
        if department != licence.issuer_department:
            raise DomainError(
                "wrong_department",
                "只有颁发部门可以注销该证照",
                "only the issuing department may revoke this licence",
                ErrorKind.FORBIDDEN,
            )
        case = fold(events)
        if (case.sealed_result or {}).get("revoked"):
            return case
        seal = self.seals.seal_for(licence.issuer_department, self.cases.catalogue.department(department).name_zh)
        signed = sign_record(seal, revocation_record(licence, reason, datetime.now(CHINA)))
        payload = {"identifier": licence.identifier, "reason": reason, "signed": signed}
        return self.record(case_no, EventType.LICENCE_REVOKED, payload)

    def _revoked_documents(self, document_id: str | None) -> list[str]:
        """The document, when this node holds its case and the case's licence was revoked."""
        case_no = case_of_document(document_id) if document_id else None
        if not case_no:
            return []
        try:
            sealed = self.cases.load(case_no).sealed_result or {}
        except DomainError:
            return []
        return [document_id] if sealed.get("revoked") and sealed.get("document_id") == document_id else []

    def result_pdf(self, case_no: str) -> bytes:
        """The sealed PDF of a decided case, as its ``result_sealed`` event carries it."""
        return self._sealed_pdf(case_no, EventType.RESULT_SEALED)

    def receipt_pdf(self, case_no: str) -> bytes:
        """The latest electronic receipt of the case's fees."""
        return self._sealed_pdf(case_no, EventType.RECEIPT_ISSUED)

    def _sealed_pdf(self, case_no: str, kind: EventType, document_id: str | None = None) -> bytes:
        events = self._history(case_no)
        sealed = [
            e for e in events if e.type is kind and (document_id is None or e.payload.get("document_id") == document_id)
        ]
        if not sealed:
            if kind is EventType.RECEIPT_ISSUED:
                raise _not_found("receipt_not_issued", "该案件尚无电子缴款票据", "this case has no receipt yet")
            raise _not_found("result_not_sealed", "该案件尚无盖章的结果文书", "this case has no sealed result yet")
        latest = max(sealed, key=lambda e: e.hlc)
        opened = self.pii.open(str(latest.payload["sealed_pdf"]))
        if not opened or not isinstance(opened.get("pdf"), str):
            raise DomainError(
                "result_unreadable", "结果文书无法解密", "the result document cannot be decrypted", ErrorKind.CONFLICT
            )
        return base64.b64decode(opened["pdf"])

    def citizen_result_pdf(self, case_no: str, identifier: str, receipt: bool = False) -> bytes:
        """The applicant's own result (or receipt): the case number and their ID number must match."""
        self.cases.citizen_progress(case_no, identifier)  # the one check of the pair, same answer for every miss
        return self.receipt_pdf(case_no) if receipt else self.result_pdf(case_no)

    def citizen_payment(self, case_no: str, identifier: str) -> tuple[dict[str, Any], PaymentView | None]:
        """The applicant's view of the case and of its fees."""
        progress = self.cases.citizen_progress(case_no, identifier)
        return progress, self.payment_of(self.cases.load(case_no))

    def verify_file(self, pdf: bytes) -> Verdict:
        verdict = verify_result(pdf, self.trust)
        revoked = self._revoked_documents(verdict.document_id) if verdict.valid else []
        return verify_result(pdf, self._with_revoked(revoked)) if revoked else verdict

    def _with_revoked(self, documents: list[str]) -> TrustBundle:
        return TrustBundle.build(self.trust.ca_pem, revoked_documents=documents)

    def verify_qr(self, payload: str) -> Verdict:
        """A scanned QR: checked against the stored result of the case it names, when this node holds it."""
        try:
            fields = parse_qr_payload(payload)
        except DomainError as error:
            return Verdict(VerdictStatus.TAMPERED, None, error.message_zh, error.message_en)
        case_no = case_of_document(fields.document_id)
        pdf = None
        for kind in SEALED_DOCUMENTS:
            try:
                pdf = self._sealed_pdf(case_no, kind, fields.document_id) if case_no else None
            except DomainError:
                continue
            break
        if pdf is None:
            return Verdict(
                VerdictStatus.UNKNOWN_ISSUER,
                None,
                "本节点没有该文书的记录，请上传 PDF 文件核验",
                "this node holds no record of that document: upload the PDF to verify it",
                fields.document_id,
            )
        return verify_qr_against(pdf, payload, self._with_revoked(self._revoked_documents(fields.document_id)))

    # --- post ---------------------------------------------------------------------------------------

    def send_by_post(self, case_no: str, name: str, phone: str, address: str) -> Case:
        """Create the waybill for a decided case's result and record it (the address travels encrypted)."""
        if self.courier is None or self.courier_settings is None or self.waybills is None:
            raise DomainError(
                "courier_not_configured",
                "本节点未接入邮政快递服务",
                "this node is not connected to a courier",
                ErrorKind.CONFLICT,
            )
        name, phone, address = name.strip(), phone.strip(), address.strip()
        if not (0 < len(name) <= MAX_NAME and 0 < len(phone) <= MAX_PHONE and 0 < len(address) <= MAX_ADDRESS):
            raise DomainError(
                "post_address_invalid",
                f"请填写收件人姓名（≤{MAX_NAME}字）、电话（≤{MAX_PHONE}位）和地址（≤{MAX_ADDRESS}字）",
                f"give the recipient's name (<= {MAX_NAME}), phone (<= {MAX_PHONE}) and address (<= {MAX_ADDRESS})",
            )
        case = self.cases.load(case_no)
        check_recorded(case, EventType.POST_ORDERED, self.node)
        if case.post is not None:
            return case
        recipient = Party(name, phone, address)
        waybill = self.courier.create_waybill(
            case_no, self.courier_settings.sender, recipient, self.courier_settings.callback_url
        )
        self.waybills.add(waybill.waybill_no, case_no)
        payload = {"waybill_no": waybill.waybill_no, "recipient": self.pii.seal(recipient.to_dict())}
        return self.record(case_no, EventType.POST_ORDERED, payload)

    def handle_courier_callback(self, headers: Mapping[str, str], raw_body: bytes) -> Case:
        """A tracking callback: signature over the raw body first, then this node's waybill of that case."""
        if self.courier is None or self.waybills is None:
            raise _not_found("courier_not_configured", "本节点未接入邮政快递服务", "no courier here")
        event = self.courier.parse_callback(headers, raw_body, self.waybills.case_of)
        return self.track(event)

    def track(self, event: TrackingEvent) -> Case:
        """Record one tracking step once (by its sequence number); the courier's delivery delivers the case."""
        case = self.cases.load(event.order_ref)
        if case.post is None:
            # The callback overtook our own record of the waybill: refuse, the courier sends it again.
            raise DomainError(
                "post_not_recorded_yet",
                "运单尚未登记，请稍后重试",
                "the waybill is not recorded yet",
                ErrorKind.CONFLICT,
            )
        post = case.post
        if event.code == "created" or post.get("waybill_no") != event.waybill_no:
            return case  # "created" is the waybill's own record
        if event.seq <= int(post.get("seq") or 0):
            return case  # a retried or late callback: already known
        payload = {
            "waybill_no": event.waybill_no,
            "seq": event.seq,
            "code": event.code,
            # The courier's location is often the recipient's address: it travels only encrypted.
            "detail": self.pii.seal({"location": event.location[:100], "description": event.description[:200]}),
        }
        case = self.record(case.case_no, EventType.POST_TRACKED, payload)
        if event.code == "delivered" and case.state in (CaseState.APPROVED, CaseState.REJECTED):
            case = self.record(case.case_no, EventType.DELIVERED, {"method": "post", "waybill_no": event.waybill_no})
        return case

    def poll_open_posts(self, _command: PollPost | None = None) -> int:
        """Poll every waybill of this node whose parcel is still on its way; how many were polled."""
        if self.courier is None or self.waybills is None:
            return 0
        polled = 0
        for _waybill, case_no in self.waybills.all():
            try:
                case = self.cases.load(case_no)
                if case.post is None or case.post.get("code") in POST_DONE:
                    continue
                self.poll_post(case_no)
                polled += 1
            except DomainError as error:  # one parcel's trouble never stops the others
                log.warning("tracking of case %s not polled: %s", case_no, error.code)
        return polled

    def poll_post(self, case_no: str) -> Case:
        """Ask the courier (the source of truth) and record the steps no callback brought."""
        if self.courier is None:
            raise _not_found("courier_not_configured", "本节点未接入邮政快递服务", "no courier here")
        case = self.cases.load(case_no)
        if not case.post:
            return case
        waybill = self.courier.poll(str(case.post["waybill_no"]))
        for step in sorted(waybill.events, key=lambda e: e.seq):
            case = self.track(step)
        return case
