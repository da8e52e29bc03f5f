"""REST API of identity under ``/api/v1/identity``: face verification, register data, library, data uses.

- ``POST /verify`` (staff token; multipart ``id_number``, ``photo``, optional ``channel``, and for the
  head-turn liveness check ``photo_turned`` with optional ``turn`` — required at ``kiosk`` and ``online``) →
  ``{match, distance, threshold, model, channel, verification_id}`` (+ ``person`` after a match), or 4xx
  ``{error, message_zh, message_en}`` when it cannot decide;
- ``POST /person`` (JSON ``id_number``, ``verification_id``, optional ``matter_code``) → the register data
  and the matter's materials on file, after a matching verification only;
- ``POST /cases``: ``POST /api/v1/cases``'s body plus ``verification_id`` and ``library_materials`` (ids)
  → the accepted case with the verification and the material links recorded on it;
- ``GET /cases/<case_no>`` (any staff token) → the verification and material links recorded on a case;
- ``POST /materials`` (multipart ``id_number``, ``material_code``, ``grade``, ``valid_until``, ``file``) → a
  material checked at the window or uploaded, stored once in the library;
- ``POST /public/uses`` (the applicant: ``case_no`` + ``id_number``, as the progress query) → every use of
  their data at this node.

Uploads are parsed into memory (never a temporary file) and bounded; the photo is dropped after the request.
"""

from __future__ import annotations

import io
from typing import IO, Any

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import parse_form_data

from node.domain.errors import DomainError, missing_field
from node.domain.identity import MAX_PHOTO_BYTES
from node.entrypoints.web.commands import accept_case_from_json
from node.entrypoints.web.http import (
    case_view,
    citizen_progress,
    context,
    domain_error_json,
    error_response,
    json_body,
    require_role,
)
from node.entrypoints.web.idempotency import idempotent
from node.entrypoints.web.limits import QUERY_PER_ADDRESS, QUERY_PER_CASE, case_number_key, configured, limiter
from node.service_layer.cases import AcceptOutcome
from node.service_layer.identity import VERIFY_ROLES, IdentityService

blueprint = Blueprint("identity", __name__, url_prefix="/api/v1/identity")

# A photo (10 MB at most) or a material file (5 MB) and a few short fields.
MAX_UPLOAD = MAX_PHOTO_BYTES + 64 * 1024
MAX_FIELD = 200


def service() -> IdentityService:
    found = context().identity_service
    if found is None:  # pragma: no cover - the web process always builds it
        raise RuntimeError("the identity service is built for the web process only")
    return found


blueprint.register_error_handler(DomainError, domain_error_json)


@blueprint.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    if isinstance(exc, RequestEntityTooLarge):
        return error_response(
            "body_too_large",
            f"上传内容过大（上限 {MAX_UPLOAD // 1048576} MB）",
            f"the upload is too large (limit {MAX_UPLOAD // 1048576} MB)",
            413,
        )
    return error_response("http_error", "请求无效", exc.description or "bad request", exc.code or 400)


def _in_memory(
    total_content_length: int | None, content_type: str | None, filename: str | None, content_length: int | None = None
) -> IO[bytes]:
    return io.BytesIO()


def multipart() -> tuple[MultiDict[str, str], MultiDict[str, FileStorage]]:
    """The request's multipart form, parsed into memory under :data:`MAX_UPLOAD` (413 beyond it)."""
    if request.content_length is not None and request.content_length > MAX_UPLOAD:
        raise RequestEntityTooLarge()
    if not (request.mimetype or "").startswith("multipart/form-data"):
        raise DomainError(
            "multipart_required",
            "请以 multipart/form-data 上传（字段 id_number 与 photo）",
            "send multipart/form-data (fields id_number and photo)",
        )
    try:
        _stream, form, files = parse_form_data(
            request.environ,
            stream_factory=_in_memory,
            max_content_length=MAX_UPLOAD,
            max_form_memory_size=512 * 1024,  # per non-file field, and the parser's buffer
            silent=False,
        )
    except ValueError:  # no boundary, a broken part: a form that cannot be read
        raise DomainError(
            "multipart_unreadable",
            "上传的表单无法读取，请重新上传（multipart/form-data）",
            "the uploaded form cannot be read; send it again as multipart/form-data",
        ) from None
    return form, files


def _field(form: MultiDict[str, str], key: str, required: bool = True) -> str | None:
    if key not in form:
        if required:
            raise missing_field(key)
        return None
    value = form.get(key, "").strip()
    if not value:
        if required:
            raise DomainError("field_blank", f"字段 {key} 不能为空", f"field {key!r} is blank")
        return None
    if len(value) > MAX_FIELD:
        raise DomainError("field_too_long", f"字段 {key} 过长", f"field {key!r} is too long")
    return value


def _file(files: MultiDict[str, FileStorage], key: str) -> bytes:
    upload = files.get(key)
    if upload is None:
        raise missing_field(key)
    data = upload.read()
    if not data:
        raise DomainError("file_empty", f"上传的 {key} 文件是空的", f"the uploaded {key} is empty")
    return data


@blueprint.post("/verify")
@require_role(*sorted(VERIFY_ROLES))
def verify() -> ResponseReturnValue:
    form, files = multipart()
    id_number = str(_field(form, "id_number")).upper()
    channel = _field(form, "channel", required=False) or "window"
    photo = _file(files, "photo")
    turned = _file(files, "photo_turned") if "photo_turned" in files else None
    direction = _field(form, "turn", required=False)
    if direction not in (None, "left", "right"):
        raise DomainError("invalid_turn", "转头方向应为 left 或 right", "turn must be left or right")
    result = service().verify(g.actor, id_number, photo, channel, turned_photo=turned, direction=direction)  # type: ignore[arg-type]
    return jsonify(result)


@blueprint.post("/person")
@require_role(*sorted(VERIFY_ROLES))
def person() -> ResponseReturnValue:
    body = json_body()
    id_number, ticket, matter = body.get("id_number"), body.get("verification_id"), body.get("matter_code")
    if not isinstance(id_number, str) or not isinstance(ticket, str):
        raise DomainError(
            "missing_field", "请提供身份证号码和人脸核验编号", "id_number and verification_id are required"
        )
    if matter is not None and (not isinstance(matter, str) or len(matter) > 64):
        raise DomainError("invalid_field", "事项编码无效", "matter_code must be a matter code")
    return jsonify(service().person(g.actor, id_number.strip().upper(), ticket, matter))


def library_ids(raw: object) -> list[str]:
    """``library_materials``: a short list of library ids (the same bounds for the API and the page)."""
    if raw is None:
        return []
    if (
        not isinstance(raw, list)
        or len(raw) > 20
        or not all(isinstance(item, str) and 0 < len(item) <= 80 for item in raw)
    ):
        raise DomainError(
            "invalid_library_materials",
            "library_materials 应为不超过 20 个材料库编号的列表",
            "library_materials must be a list of at most 20 library ids",
        )
    return list(raw)


def identity_view(outcome: AcceptOutcome) -> dict[str, Any]:
    case = outcome.case
    if case is None:
        return {}
    return {"identity_verification": case.identity_verification, "material_links": case.material_links}


@blueprint.post("/cases")
@require_role("acceptor", "admin")
@idempotent
def accept() -> ResponseReturnValue:
    body = json_body()
    command = accept_case_from_json(g.actor, body)
    ticket = body.get("verification_id")
    if ticket is not None and not isinstance(ticket, str):
        raise DomainError("invalid_field", "verification_id 应为文本", "verification_id must be a string")
    outcome = service().accept(g.actor, command, ticket, library_ids(body.get("library_materials")))
    if outcome.outcome == "incomplete":
        return jsonify({"outcome": "incomplete", "missing": outcome.missing, "notice": outcome.notice}), 200
    assert outcome.case is not None
    view = case_view(g.actor, context().cases.staff_view(g.actor, outcome.case))
    return jsonify({"outcome": outcome.outcome, **view, **identity_view(outcome)}), 201


@blueprint.get("/cases/<case_no>")
@require_role()
def case_identity(case_no: str) -> ResponseReturnValue:
    """The verification and the library links recorded on a case held here (the handling node's view too)."""
    case = context().cases.load(case_no)
    return jsonify(
        {
            "case_no": case.case_no,
            "identity_verification": case.identity_verification,
            "material_links": case.material_links,
        }
    )


@blueprint.post("/materials")
@require_role("acceptor", "admin")
@idempotent
def add_material() -> ResponseReturnValue:
    form, files = multipart()
    upload = files.get("file")
    record = service().add_material(
        g.actor,
        id_number=str(_field(form, "id_number")).upper(),
        material_code=str(_field(form, "material_code")),
        grade=str(_field(form, "grade")),
        content=_file(files, "file"),
        media_type=(upload.mimetype if upload is not None else "") or "application/octet-stream",
        valid_until=_field(form, "valid_until", required=False),
    )
    view = record.to_dict()
    view.pop("owner_key")
    return jsonify(view), 201


@blueprint.post("/public/uses")
@limiter.shared_limit(configured(QUERY_PER_ADDRESS), scope="citizen-query")
@limiter.shared_limit(configured(QUERY_PER_CASE), scope="citizen-query-case", key_func=case_number_key)
def public_uses() -> ResponseReturnValue:
    """The applicant's own view: proven by a case number with their ID number, like the progress query."""
    body = json_body()
    case_no, identifier = body.get("case_no"), body.get("id_number")
    if not isinstance(case_no, str) or not isinstance(identifier, str):
        return error_response("missing_field", "请输入受理编号和证件号码", "case_no and id_number are required", 400)
    citizen_progress(case_no, identifier)  # one answer for every failure, audited
    return jsonify({"uses": service().uses_of(identifier.strip().upper()[:40])})
