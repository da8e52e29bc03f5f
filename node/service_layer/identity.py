"""Use cases of identity at a window: verify a face, pull the person's register data, reuse library materials.

:class:`IdentityService` holds the ports (the verifier, the node's register and materials library, the
use log, the personal-data key, the case service) and does, for one node:

- ``verify``: a photo and an ID number to a decided :class:`~node.domain.identity.Verification`, kept under a
  random ticket (so an acceptance can only name a verification this node made, never claim one) and logged
  as a use of the person's data; after a match, the person's register data for the form;
- ``person``: the register data and the materials on file for a matter, again only with a matching ticket;
- ``accept``: the acceptance with a verification ticket and library materials. Everything is checked first
  (the ticket is this node's, fresh, unused and the applicant's; the name is the register's; every
  material is the applicant's, valid and strong enough), then the case is accepted through the bus, then one
  ``identity_verified`` event signed by the node's key records the verification and the material links on
  the case, naming the first event's hash; every use is logged for the applicant to read back;
- ``add_material``: a material checked at the window or uploaded, stored once in the library;
- ``uses``: what the applicant may see of the uses of their data.

The photo is never kept: it is read, encoded and dropped inside the verifier.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from node.adapters.library import MaterialsLibrary, StoredVerification, UseLog
from node.adapters.pii import PersonalData
from node.adapters.registers import RegisterStore
from node.domain.case import ACCEPTOR, ADMIN, CITIZEN, Case, fold
from node.domain.catalogue import Catalogue, Matter
from node.domain.errors import DomainError, ErrorKind
from node.domain.events import Event, EventType
from node.domain.identifiers import mask_id_number, validate_id_number
from node.domain.identity import IdentityVerifier, TurnDirection, Verification
from node.domain.materials import GRADE_LABELS, LibraryMaterial, MaterialGrade, OnFile, materials_on_file, reuse
from node.domain.messages import CaseWritten
from node.domain.permissions import HANDLING_ROLES
from node.domain.registers import PERSON_STATUSES, PersonRecord
from node.service_layer.cases import AcceptOutcome, CaseService
from node.service_layer.commands import AcceptCase, Actor
from tiers import DivisionTree

__all__ = ["CHANNELS", "TICKET_LIFETIME_S", "VERIFY_ROLES", "IdentityService"]

# Who may verify a face and read the register data it unlocks: the roles that handle cases (permissions.py).
VERIFY_ROLES = HANDLING_ROLES
# Who may put a checked or uploaded material into the library: the roles that accept at a window.
LIBRARY_WRITERS = frozenset({ACCEPTOR, ADMIN})
CHANNELS = ("window", "kiosk", "online")
# Where no member of staff sees the applicant in front of the camera, the liveness check is required.
UNATTENDED_CHANNELS = frozenset({"kiosk", "online"})
# A verification may be used by an acceptance this long after it was made, and once.
TICKET_LIFETIME_S = 15 * 60
MAX_REUSED = 20
_STAFF_GRADES = frozenset({MaterialGrade.CHECKED, MaterialGrade.UPLOADED})


def _refused(code: str, zh: str, en: str, kind: ErrorKind = ErrorKind.CONFLICT) -> DomainError:
    return DomainError(code, zh, en, kind)


def _role_not_allowed(roles: frozenset[str]) -> DomainError:
    return DomainError(
        "role_not_allowed",
        "您的角色无权进行身份核验或调取人口库信息",
        f"this role may not verify identities or read the register; needs one of {', '.join(sorted(roles))}",
        ErrorKind.FORBIDDEN,
    )


@dataclass(frozen=True)
class _Prepared:
    """An acceptance's identity part, checked before anything is written."""

    stored: StoredVerification
    owner_key: str
    records: tuple[LibraryMaterial, ...]
    claim: str


class IdentityService:
    def __init__(
        self,
        *,
        node: str,
        tree: DivisionTree,
        verifier: IdentityVerifier,
        registers: RegisterStore,
        library: MaterialsLibrary,
        uses: UseLog,
        personal_data: PersonalData,
        cases: CaseService,
        handle: Callable[[AcceptCase], AcceptOutcome],
    ) -> None:
        self.node = node
        self.tree = tree
        self.verifier = verifier
        self.registers = registers
        self.library = library
        self.uses = uses
        self.pii = personal_data
        self.cases = cases
        self._handle = handle
        # The history of the case this thread just wrote (from CaseWritten): spares reading it back.
        self._written = threading.local()

    def note_written(self, message: CaseWritten) -> None:
        """Subscribed to ``CaseWritten`` by the composition root: remember the case this thread wrote."""
        if message.written:
            self._written.case = (message.written[0].case_no, message.history)

    def _history(self, case_no: str) -> tuple[Event, ...]:
        noted = getattr(self._written, "case", None)
        if noted is not None and noted[0] == case_no:
            return tuple(noted[1])  # events this node signed a moment ago
        return tuple(self.cases.verifier.verified_case(case_no).events)  # read and checked

    @property
    def catalogue(self) -> Catalogue:
        return self.cases.catalogue

    def _today(self) -> date:
        return self.cases.today()

    # --- verification -------------------------------------------------------------------------------------

    def verify(
        self,
        actor: Actor,
        id_number: str,
        photo: bytes,
        channel: str = "window",
        *,
        turned_photo: bytes | None = None,
        direction: TurnDirection | None = None,
    ) -> dict[str, Any]:
        """``{match, distance, threshold, model, channel, verification_id}`` and, after a match, ``person``.

        With ``turned_photo`` (required at a kiosk and online, where nobody watches the camera) the head-turn
        liveness check runs too and ``match`` needs both photos to match and the head to have turned.
        """
        if actor.role not in VERIFY_ROLES:
            raise _role_not_allowed(VERIFY_ROLES)
        if channel not in CHANNELS:
            raise DomainError(
                "invalid_channel", "核验渠道应为 window、kiosk 或 online", "the channel must be window, kiosk or online"
            )
        if channel in UNATTENDED_CHANNELS and turned_photo is None:
            raise DomainError(
                "liveness_required",
                "自助终端和网上核验须再上传一张转头照片（photo_turned）用于活体检测",
                "a kiosk or online verification needs a second photo with the head turned (photo_turned)",
            )
        number = validate_id_number(id_number)
        if turned_photo is None:
            verification = self.verifier.verify(photo, number)  # raises the reasons it cannot decide
        else:
            verification = self.verifier.verify_with_liveness(photo, turned_photo, number, direction=direction)
        key = self.pii.lookup_key(number)
        ticket = self.uses.store_verification(key, verification, channel, actor.username)
        self.uses.log(
            key,
            "verification",
            node=self.node,
            actor=actor.username,
            role=actor.role,
            outcome="match" if verification.match else "no_match",
        )
        result: dict[str, Any] = {**verification.to_dict(), "channel": channel, "verification_id": ticket}
        if verification.match:
            record = self.registers.person(number)
            if record is not None:
                result["person"] = self._person_view(record)
                self.uses.log(key, "register", node=self.node, actor=actor.username, role=actor.role, outcome="read")
        return result

    def _person_view(self, record: PersonRecord) -> dict[str, Any]:
        residence = record.residence_code
        return {
            "id_number": record.id_number,
            "id_number_masked": mask_id_number(record.id_number),
            "name": record.name,
            "residence_code": residence,
            "residence_name": self.tree.get(residence).name if residence in self.tree else "",
            "household_id": record.household_id,
            "birth_date": record.birth_date.isoformat(),
            "sex": "男" if record.is_male else "女",
            "status": record.status,
            "status_zh": PERSON_STATUSES[record.status],
        }

    def _fresh(self, ticket: object, owner_key: str) -> StoredVerification:
        stored = self.uses.verification(ticket) if isinstance(ticket, str) else None
        if stored is None or time.time() - stored.at > TICKET_LIFETIME_S:
            raise _refused(
                "verification_expired",
                f"人脸核验记录不存在或已超过 {TICKET_LIFETIME_S // 60} 分钟，请重新核验",
                f"the face verification is unknown or older than {TICKET_LIFETIME_S // 60} minutes; verify again",
            )
        if stored.owner_key != owner_key:
            raise _refused(
                "verification_other_person",
                "人脸核验的身份证号码与申请人不一致",
                "the face verification was made for another ID number than the applicant's",
            )
        if not stored.verification.match:
            raise _refused(
                "verification_failed",
                "人脸核验未通过，不能据此受理；请改用身份证件人工核验",
                "the face verification did not match; check the ID card by hand instead",
            )
        if stored.used_by_case is not None:
            raise _refused(
                "verification_used",
                "该人脸核验记录已用于另一件申请，请重新核验",
                "this face verification was already used for another application; verify again",
            )
        return stored

    def person(self, actor: Actor, id_number: str, ticket: str, matter_code: str | None = None) -> dict[str, Any]:
        """数据调取: the verified person's register data and, for a matter, their materials on file."""
        if actor.role not in VERIFY_ROLES:
            raise _role_not_allowed(VERIFY_ROLES)
        number = validate_id_number(id_number)
        key = self.pii.lookup_key(number)
        self._fresh(ticket, key)
        record = self.registers.person(number)
        if record is None:
            raise DomainError(
                "person_not_in_register",
                "本节点人口库中没有该人员",
                "this node's population register does not hold this person",
                ErrorKind.NOT_FOUND,
            )
        self.uses.log(key, "register", node=self.node, actor=actor.username, role=actor.role, outcome="read")
        out: dict[str, Any] = {"person": self._person_view(record)}
        if matter_code:
            out["materials"] = [self._on_file_view(item) for item in self.on_file(key, self.catalogue.get(matter_code))]
        return out

    def on_file(self, owner_key: str, matter: Matter) -> list[OnFile]:
        return materials_on_file(matter, self.library.of_owner(owner_key), owner_key, self._today())

    def on_file_for(self, id_number: str, matter_code: str) -> list[dict[str, Any]]:
        """The matter's materials on file for the holder of ``id_number`` (for the acceptance page)."""
        key = self.pii.lookup_key(validate_id_number(id_number))
        return [self._on_file_view(item) for item in self.on_file(key, self.catalogue.get(matter_code))]

    @staticmethod
    def _on_file_view(item: OnFile) -> dict[str, Any]:
        view = item.to_dict()
        if item.usable is not None:
            view["grade_zh"], view["grade_en"] = GRADE_LABELS[item.usable.grade]
            view["issuer"] = item.usable.issuer
        return view

    # --- acceptance ---------------------------------------------------------------------------------------

    def _prepare(self, actor: Actor, command: AcceptCase, ticket: object, library_ids: Sequence[str]) -> _Prepared:
        if command.applicant.kind != "person":
            raise DomainError(
                "verification_person_only",
                "人脸核验只适用于个人申请人",
                "face verification applies to a person applicant only",
            )
        number = validate_id_number(command.applicant.identifier)
        key = self.pii.lookup_key(number)
        stored = self._fresh(ticket, key)
        record = self.registers.person(number)
        if record is not None and record.name != command.applicant.name:
            raise DomainError(
                "applicant_name_mismatch",
                "申请人姓名与人口库记录不一致，请按核验结果填写",
                "the applicant's name differs from the register's record; use the name the verification returned",
            )
        ids = list(dict.fromkeys(library_ids))
        if len(ids) > MAX_REUSED:
            raise DomainError(
                "too_many_materials", f"一次最多复用 {MAX_REUSED} 件材料", f"at most {MAX_REUSED} materials per case"
            )
        matter = self.catalogue.get(command.matter_code)
        records = []
        for material_id in ids:
            found = self.library.get(material_id)
            if found is None:
                raise DomainError(
                    "material_not_found",
                    "材料库中没有该材料",
                    "the library holds no such material",
                    ErrorKind.NOT_FOUND,
                )
            # Checked with a placeholder case: the real link is made once the case number exists.
            reuse(
                found,
                matter=matter,
                material_code=found.material_code,
                owner_key=key,
                case_id="pending",
                node=self.node,
                actor=actor.username,
                day=self._today(),
            )
            records.append(found)
        claim = f"claim:{time.time_ns()}"
        if not self.uses.use_verification(stored.ticket, claim):
            raise _refused(
                "verification_used",
                "该人脸核验记录已用于另一件申请，请重新核验",
                "this face verification was already used for another application; verify again",
            )
        return _Prepared(stored, key, tuple(records), claim)

    def accept(
        self, actor: Actor, command: AcceptCase, ticket: str | None, library_ids: Sequence[str] = ()
    ) -> AcceptOutcome:
        """Accept with a face verification and reused library materials; plain acceptance without either."""
        if not ticket and not library_ids:
            return self._handle(command)
        if not ticket:
            raise _refused(
                "verification_required",
                "复用材料库材料前须先通过人脸核验",
                "verify the applicant's face before reusing library materials",
            )
        prepared = self._prepare(actor, command, ticket, library_ids)
        codes = [record.material_code for record in prepared.records]
        command = replace(command, materials=tuple(dict.fromkeys((*command.materials, *codes))))
        self._written.case = None
        try:
            outcome = self._handle(command)
        except BaseException:
            self.uses.release_verification(prepared.stored.ticket, prepared.claim)
            raise
        if outcome.case is None or outcome.case_no is None:  # incomplete: nothing written, the ticket stays usable
            self.uses.release_verification(prepared.stored.ticket, prepared.claim)
            return outcome
        case = self._record_on_case(actor, outcome.case_no, command.matter_code, prepared)
        return replace(outcome, case=case)

    def _record_on_case(self, actor: Actor, case_no: str, matter_code: str, prepared: _Prepared) -> Case:
        matter = self.catalogue.get(matter_code)
        links = [
            reuse(
                record,
                matter=matter,
                material_code=record.material_code,
                owner_key=prepared.owner_key,
                case_id=case_no,
                node=self.node,
                actor=actor.username,
                day=self._today(),
            ).to_dict()
            for record in prepared.records
        ]
        verification: Verification = prepared.stored.verification
        known = self._history(case_no)
        first = next(event for event in known if event.prev_hash is None)
        case = fold(known)
        payload = {
            "application_hash": first.hash,
            "verification": {
                **verification.to_dict(),
                "channel": prepared.stored.channel,
                "liveness": prepared.stored.liveness,
                "verified_at": datetime.fromtimestamp(prepared.stored.at, UTC).isoformat(timespec="seconds"),
                "verified_by": prepared.stored.actor,
            },
            "material_links": links,
        }
        clock = self.cases.clock
        clock.observe(case.last_hlc)
        event = Event(
            case_no=case_no,
            type=EventType.IDENTITY_VERIFIED,
            actor_id=actor.username,
            actor_role=actor.role,
            node=self.node,
            hlc=clock.tick().to_str(),
            prev_hash=case.last_event_hash,
            payload=payload,
        )
        # Signed like every event: the node's signature over a record naming the application's first event
        # and the verification result is the applicant's electronic signature of the application.
        event = event.with_signature(self.cases.identity.sign(event.hash))
        self.cases.events.append([event])
        self.cases.publish(CaseWritten((event,), (*known, event)))
        entries = [
            {
                "owner_key": prepared.owner_key,
                "kind": "material",
                "node": self.node,
                "actor": actor.username,
                "role": actor.role,
                "case_no": case_no,
                "material_id": link["material_id"],
                "material_code": link["material_code"],
                "outcome": "reused",
            }
            for link in links
        ]
        entries.append(
            {
                "owner_key": prepared.owner_key,
                "kind": "verification",
                "node": self.node,
                "actor": actor.username,
                "role": actor.role,
                "case_no": case_no,
                "material_id": None,
                "material_code": None,
                "outcome": "recorded_on_case",
            }
        )
        self.uses.confirm_verification(prepared.stored.ticket, prepared.claim, case_no, entries)
        return fold([*known, event])

    # --- the library --------------------------------------------------------------------------------------

    def known_material(self, code: str) -> bool:
        return any(material.code == code for matter in self.catalogue.matters() for material in matter.materials)

    def add_material(
        self,
        actor: Actor,
        *,
        id_number: str,
        material_code: str,
        grade: str,
        content: bytes,
        media_type: str,
        valid_until: str | None,
    ) -> LibraryMaterial:
        """A material checked against the original at this window, or uploaded by the applicant, stored once."""
        if actor.role not in LIBRARY_WRITERS:
            raise _role_not_allowed(LIBRARY_WRITERS)
        key = self.pii.lookup_key(validate_id_number(id_number))
        try:
            level = MaterialGrade(grade)
        except ValueError:
            level = None
        if level not in _STAFF_GRADES:
            raise DomainError(
                "invalid_grade",
                "窗口只能登记“窗口核验原件”(checked) 或“申请人上传”(uploaded) 的材料",
                "a window records materials as checked or uploaded only",
            )
        if not isinstance(material_code, str) or not self.known_material(material_code):
            raise DomainError("unknown_material", "目录中没有该材料类型", "the catalogue has no such material code")
        record = self.library.add(
            material_id=self.library.new_id(self.node),
            owner_key=key,
            material_code=material_code,
            grade=level,
            issuer=f"{self.node}:{actor.username}"[:100],
            issued_on=self._today(),
            valid_until=valid_until or None,
            content=content,
            media_type=media_type,
        )
        self.uses.log(
            key,
            "material",
            node=self.node,
            actor=actor.username,
            role=actor.role,
            material_id=record.material_id,
            material_code=record.material_code,
            outcome="stored",
        )
        return record

    # --- what the applicant sees --------------------------------------------------------------------------

    def uses_of(self, identifier: str) -> list[dict[str, Any]]:
        """Every use of the holder's data at this node, newest first, as the applicant may see it."""
        key = self.pii.lookup_key(identifier)
        out = []
        for use in self.uses.uses_of(key):
            node = use["node"]
            out.append(
                {
                    "kind": use["kind"],
                    "outcome": use["outcome"],
                    "case_no": use["case_no"],
                    "material_code": use["material_code"],
                    "node": node,
                    "node_name": self.tree.get(node).name if node in self.tree else node,
                    # Who: the staff member's role and account at that node; the applicant's own uses as such.
                    "role": use["role"],
                    "actor": use["actor"] if use["role"] != CITIZEN else "",
                    "at": datetime.fromtimestamp(use["at"], UTC).isoformat(timespec="seconds"),
                }
            )
        return out
