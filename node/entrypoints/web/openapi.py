"""The OpenAPI 3.1 description of ``/api/v1`` (served at ``/api/v1/openapi.json``): what the server enforces.

Every constraint the server checks on the shape of a request is written here — required fields,
types, lengths, patterns, enumerations — so a request this description calls valid is never
refused with 400, and one it calls invalid is refused (tests/test_schemathesis.py runs schemathesis
over every operation to hold both ways). :data:`SPEC` is the fixed part; :func:`spec_for` adds what
depends on the node and its catalogue: which matters this node accepts, and for each the materials
it knows and the jurisdiction locations that lead to a handling node (computed with the same domain
function the acceptance calls). Two checks are formats rather than patterns, since a pattern cannot
carry a check digit: ``gb11643`` (resident ID number) and ``gb32100`` (unified social credit code).

Statuses: 400 the request breaks this description; 401 no or a dead token; 403 the role or the node
may not; 404 no such case, matter, alert or account; 409 not in the case's current state, or a
version or idempotency conflict; 413 body over 1 MB; 422 a catalogue whose content contradicts
itself, or an ``Idempotency-Key`` reused for another request; 429 too many requests.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from node import __version__
from node.domain.case import ACTIONS, CaseState
from node.domain.catalogue import (
    DELIVERY_OPTIONS,
    HANDLING_TYPES,
    LOCATION_FIELDS,
    MATERIAL_FORMS,
    MATERIAL_SOURCES,
    MATTER_TYPES,
    TONGBAN_SCOPES,
    Catalogue,
    Matter,
)
from node.domain.errors import DomainError
from node.domain.jurisdiction import handling_node
from node.domain.permissions import SIGNED_REQUEST_MAX
from tiers import DivisionTree, Tier

_ERROR = {"$ref": "#/components/schemas/Error"}
# Text: at least one character that is not white space (blank counts as absent), no more than ``limit``.
# A character that is not blank as the server sees it (Python's str.strip(): \s of some regex engines
# misses U+0085 and others, which let a "name" of one NEL through the schema and the server refuse it).
NOT_BLANK = r"[^\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
NO_CONTROL = r"^[^\u0000-\u001f\u007f]*$"
DIVISION_CODE = r"^[0-9]{12}$"
MAX_REASON = 500
MAX_MATERIALS = 100
MAX_MATERIAL_CODE = 32
CASE_NO = {"type": "string", "minLength": 1, "maxLength": 80, "pattern": r"^[^\s:/]+$"}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes a retry safe: the same key with the same request (same account) returns the first "
    "successful answer, kept 24 h at this node, with the header Idempotent-Replayed: true; the same key "
    "with another request gets 422; while the first still runs, 409 with Retry-After.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:~-]{1,100}$"},
}
ERROR_STATUSES = (400, 401, 403, 404, 405, 409, 413, 422, 429)


def text(limit: int, required: bool = True) -> dict[str, Any]:
    """A text field: required ones must have a non-blank character; optional ones may be null or blank."""
    if required:
        return {"type": "string", "minLength": 1, "maxLength": limit, "pattern": NOT_BLANK}
    return {"type": ["string", "null"], "maxLength": limit}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _json(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


_TIMELINE = {
    "type": "array",
    "items": _object(
        type={"type": "string"},
        node={"type": "string"},
        actor={"type": ["string", "null"]},
        at={"type": "string"},
    ),
}
_CASE = {
    "type": "object",
    "required": ["case_no", "state"],
    "properties": {
        "case_no": {"type": "string"},
        "matter_code": {"type": "string"},
        "state": {"enum": sorted(s.value for s in CaseState)},
        "accepting_node": {"type": "string"},
        "handling_node": {"type": "string"},
        "deadline": {"type": ["string", "null"], "format": "date"},
        "timeline": _TIMELINE,
        "allowed_actions": {"type": "array", "items": {"type": "string"}},
        "view_catching_up": {
            "type": "boolean",
            "description": "the case is written; the inbox and search show it once the node catches up",
        },
    },
}
_ID_NUMBER = {
    "type": "string",
    "pattern": "^[0-9]{17}[0-9Xx]$",
    "format": "gb11643",
    "description": "GB 11643 resident ID number: region, birth date, sequence, check digit",
}
_CREDIT_CODE = {
    "type": "string",
    "pattern": "^[0-9A-HJ-NP-RTUW-Ya-hj-np-rtuw-y]{18}$",
    "format": "gb32100",
    "description": "GB 32100 unified social credit code with its check character",
}
_APPLICANT = {
    "oneOf": [
        {
            "type": "object",
            "required": ["kind", "id_number", "name"],
            "properties": {"kind": {"const": "person"}, "id_number": _ID_NUMBER, "name": text(100)},
        },
        {
            "type": "object",
            "required": ["kind", "credit_code", "name"],
            "properties": {"kind": {"const": "enterprise"}, "credit_code": _CREDIT_CODE, "name": text(100)},
        },
    ]
}
_MATERIAL_CODE = {"type": "string", "minLength": 1, "maxLength": MAX_MATERIAL_CODE}
# The fields every acceptance may carry; the per-matter variants of spec_for() narrow them.
_ACCEPT_COMMON: dict[str, Any] = {
    "matter_code": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_.-]+$"},
    "applicant": _APPLICANT,
    "materials": {"type": ["array", "null"], "maxItems": MAX_MATERIALS, "items": _MATERIAL_CODE},
    **{
        key: {"type": ["string", "null"], "pattern": DIVISION_CODE, "description": "a division code"}
        for key in LOCATION_FIELDS.values()
        if key is not None
    },
    "settle_on_spot": {"type": ["boolean", "null"]},
    "refuse_reason": {**text(MAX_REASON, required=False), "description": "不予受理 with this reason"},
}

# Fields an action needs, beyond ``action``; the others are ignored (but still checked for shape).
ACTION_NEEDS: dict[str, tuple[str, ...]] = {
    "reject": ("reason",),
    "request_supplement": ("reason",),
    "record_result": ("summary",),
    "transfer": ("new_handling_node", "reason"),
    "withdraw": ("signed_request",),
    "evaluate": ("level",),
}
_ACTION_FIELDS: dict[str, Any] = {
    "action": {"enum": sorted(ACTIONS)},
    "reason": text(MAX_REASON, required=False),
    "summary": text(MAX_REASON, required=False),
    "certificate_id": text(100, required=False),
    "method": {"enum": [*DELIVERY_OPTIONS, None]},
    "new_handling_node": {"anyOf": [{"$ref": "#/components/schemas/Division"}, {"type": "null"}]},
    "level": {"type": ["integer", "null"], "minimum": 1, "maximum": 5},
    "materials": {"type": ["array", "null"], "maxItems": MAX_MATERIALS, "items": _MATERIAL_CODE},
    "signed_request": {
        "type": ["string", "null"],
        "maxLength": SIGNED_REQUEST_MAX,
        "pattern": NO_CONTROL,
        "description": "withdraw by staff: reference of the applicant's signed request",
    },
}
_NEEDED = {
    "reason": text(MAX_REASON),
    "summary": text(MAX_REASON),
    "new_handling_node": {"$ref": "#/components/schemas/Division"},
    "signed_request": {**text(SIGNED_REQUEST_MAX), "pattern": r"^[^\u0000-\u001f\u007f]*\S[^\u0000-\u001f\u007f]*$"},
    "level": {"type": "integer", "minimum": 1, "maximum": 5},
}
_ACTION_BODY = {
    "type": "object",
    "required": ["action"],
    "properties": _ACTION_FIELDS,
    "allOf": [
        {
            "if": {"properties": {"action": {"const": action}}, "required": ["action"]},
            "then": {"required": list(needs), "properties": {name: _NEEDED[name] for name in needs}},
        }
        for action, needs in sorted(ACTION_NEEDS.items())
    ],
}

_MATERIAL = {
    "type": "object",
    "required": ["code", "name", "form", "copies", "source", "required"],
    "properties": {
        "code": {"type": "string", "minLength": 1, "maxLength": MAX_MATERIAL_CODE},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "form": {"enum": sorted(MATERIAL_FORMS)},
        "copies": {"type": "integer", "minimum": 0, "maximum": 100},
        "source": {"enum": sorted(MATERIAL_SOURCES)},
        "required": {"type": "boolean"},
    },
}
_MATTER = {
    "type": "object",
    "required": [
        "code",
        "name",
        "matter_type",
        "department",
        "authority_tier",
        "jurisdiction_rule",
        "legal_days",
        "promised_days",
        "handling_type",
        "visits_required",
        "fee_yuan",
        "online_depth",
        "materials",
        "delivery_options",
        "tongban_scope",
    ],
    "properties": {
        "code": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_.-]+$"},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "matter_type": {"enum": sorted(MATTER_TYPES)},
        "department": {"type": "string", "minLength": 1, "maxLength": 64},
        "authority_tier": {"enum": [tier.key for tier in Tier]},
        "jurisdiction_rule": {"enum": sorted(LOCATION_FIELDS)},
        "legal_days": {"type": "integer", "minimum": 0, "maximum": 3650},
        "promised_days": {"type": "integer", "minimum": 0, "maximum": 3650},
        "handling_type": {"enum": sorted(HANDLING_TYPES)},
        "visits_required": {"type": "integer", "minimum": 0, "maximum": 100},
        "fee_yuan": {"type": "string", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,2})?$"},
        "online_depth": {"type": "integer", "minimum": 1, "maximum": 4},
        "materials": {"type": "array", "maxItems": MAX_MATERIALS, "items": _MATERIAL},
        "delivery_options": {
            "type": "array",
            "minItems": 1,
            "maxItems": len(DELIVERY_OPTIONS),
            "uniqueItems": True,
            "items": {"enum": list(DELIVERY_OPTIONS)},
        },
        "tongban_scope": {"enum": sorted(TONGBAN_SCOPES)},
        "version": {"type": "integer", "minimum": 1},
    },
}
# What PUT /catalog takes. The server checks a body against it first (400); what it cannot say —
# a matter naming an unknown department, promised days above legal days, one material code for two
# names — is the catalogue's own check (422).
CATALOGUE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "departments", "matters"],
    "properties": {
        "version": {"type": "integer", "minimum": 1, "description": "the current version + 1 (else 409)"},
        "note": {"type": "string", "maxLength": 500},
        "departments": {
            "type": "array",
            "maxItems": 200,
            "items": {
                "type": "object",
                "required": ["code", "name_zh", "name_en"],
                "properties": {
                    "code": {"type": "string", "minLength": 1, "maxLength": 64},
                    "name_zh": {"type": "string", "minLength": 1, "maxLength": 100},
                    "name_en": {"type": "string", "minLength": 1, "maxLength": 200},
                },
            },
        },
        # 2,000 matters fit in the 1 MB a request may carry; the bound says so before the size limit does.
        "matters": {"type": "array", "maxItems": 2000, "items": _MATTER},
        "implementation": {
            "type": "object",
            "maxProperties": 2000,
            "propertyNames": {"pattern": DIVISION_CODE},
            "additionalProperties": {
                "type": "array",
                "maxItems": 500,
                "items": {
                    "type": "object",
                    "required": ["matter_code"],
                    "properties": {
                        "matter_code": {"type": "string", "minLength": 1, "maxLength": 64},
                        "authority_tier": {"enum": [tier.key for tier in Tier]},
                        "promised_days": {"type": "integer", "minimum": 0, "maximum": 3650},
                    },
                },
            },
        },
    },
}

_BEARER = [{"bearer": []}]


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_USERNAME = _path_param("username", {"type": "string", "minLength": 1, "maxLength": 100})
_OPS_NOTE = " (ops or admin, at a node that monitors operations: the city)"

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "通办 Tongban node API", "version": __version__, "description": (__doc__ or "").strip()},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message_zh", "message_en"],
                "properties": {
                    "error": {"type": "string"},
                    "message_zh": {"type": "string"},
                    "message_en": {"type": "string"},
                },
            },
            "Case": _CASE,
            "Catalogue": CATALOGUE_SCHEMA,
            # Every division of the tree (spec_for lists them): where a case may be transferred.
            "Division": {"type": "string", "pattern": DIVISION_CODE},
        },
    },
    "paths": {
        "/api/v1/openapi.json": {
            "get": {"summary": "This description", "responses": {"200": _json({"type": "object"}), **_errors(429)}}
        },
        "/api/v1/auth/token": {
            "post": {
                "summary": "Staff sign-in: username and password → bearer token",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["username", "password"],
                        "properties": {
                            "username": {"type": "string", "minLength": 1, "maxLength": 100},
                            "password": {"type": "string", "minLength": 1, "maxLength": 200},
                        },
                    }
                ),
                "responses": {
                    "200": _json(_object(token={"type": "string"}, expires_in={"type": "integer"})),
                    **_errors(400, 401, 403, 405, 413, 429),
                },
            }
        },
        "/api/v1/auth/logout": {
            "post": {
                "summary": "End this token; with everywhere=true, every page session and token of the account",
                "security": _BEARER,
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _object(everywhere={"type": ["boolean", "null"]})}},
                },
                "responses": {"200": _json(_object(ended={"type": "integer"})), **_errors(400, 401, 405, 413)},
            }
        },
        "/api/v1/auth/password": {
            "post": {
                "summary": "Change one's own password; every session and token of the account ends",
                "security": _BEARER,
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["current_password", "new_password"],
                        "properties": {
                            "current_password": {"type": "string", "maxLength": 200},
                            "new_password": {
                                "type": "string",
                                "minLength": 10,
                                "maxLength": 128,
                                "description": "two of lower case, upper case, digits, symbols; no control "
                                "characters, not the user name, not a common password",
                            },
                        },
                    }
                ),
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 405, 413)},
            }
        },
        "/api/v1/accounts/{username}/disable": {
            "post": {
                "summary": "Disable a staff account (admin; not one's own): its sessions and tokens end at once",
                "security": _BEARER,
                "parameters": [_USERNAME],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403, 404, 405)},
            }
        },
        "/api/v1/accounts/{username}/enable": {
            "post": {
                "summary": "Enable a disabled staff account again (admin; not one's own)",
                "security": _BEARER,
                "parameters": [_USERNAME],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403, 404, 405)},
            }
        },
        "/api/v1/catalog": {
            "put": {
                "summary": "Publish a new catalogue version (admin, at the city only; version = current + 1)",
                "security": _BEARER,
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": _body({"$ref": "#/components/schemas/Catalogue"}),
                "responses": {
                    "200": _json(_object(version={"type": "integer"}, matters={"type": "integer"})),
                    **_errors(400, 401, 403, 405, 409, 413, 422),
                },
            }
        },
        "/api/v1/catalog/matters": {
            "get": {
                "summary": "The catalogue of general matters",
                "responses": {"200": _json(_object(version={"type": "integer"}, matters={"type": "array"}))},
            }
        },
        "/api/v1/cases": {
            "post": {
                "operationId": "acceptCase",
                "summary": "Accept an application (受理); 200 with outcome=incomplete lists every missing material",
                "security": _BEARER,
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": _body(
                    {"type": "object", "required": ["matter_code", "applicant"], "properties": _ACCEPT_COMMON}
                ),
                "responses": {
                    "201": {
                        **_json(
                            {"allOf": [{"$ref": "#/components/schemas/Case"}, _object(outcome={"type": "string"})]},
                            "accepted or refused (不予受理)",
                        ),
                        "links": {
                            "GetCase": {"operationId": "getCase", "parameters": {"case_no": "$response.body#/case_no"}},
                            "ActOnCase": {
                                "operationId": "actOnCase",
                                "parameters": {"case_no": "$response.body#/case_no"},
                            },
                        },
                    },
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["outcome", "missing"],
                            "properties": {"outcome": {"const": "incomplete"}, "missing": {"type": "array"}},
                        },
                        "materials missing: the one-time notice (一次性告知)",
                    ),
                    **_errors(400, 401, 403, 404, 405, 409, 413, 422),
                },
            },
            "get": {
                "summary": "Search cases held by this node",
                "security": _BEARER,
                "parameters": [
                    _query("q", {"type": "string", "maxLength": 100, "pattern": NO_CONTROL}),
                    _query("state", {"enum": sorted(s.value for s in CaseState)}),
                ],
                "responses": {"200": _json(_object(cases={"type": "array"})), **_errors(400, 401, 405)},
            },
        },
        "/api/v1/cases/{case_no}": {
            "get": {
                "operationId": "getCase",
                "summary": "One case with its timeline",
                "security": _BEARER,
                "parameters": [_path_param("case_no", CASE_NO)],
                "responses": {"200": _json(_CASE), **_errors(401, 404, 405)},
            }
        },
        "/api/v1/cases/{case_no}/actions": {
            "post": {
                "operationId": "actOnCase",
                "summary": "Act on a case: " + ", ".join(sorted(ACTIONS)),
                "security": _BEARER,
                "parameters": [_path_param("case_no", CASE_NO), IDEMPOTENCY_KEY],
                "requestBody": _body(_ACTION_BODY),
                "responses": {"200": _json(_CASE), **_errors(400, 401, 403, 404, 405, 409, 413, 422)},
            }
        },
        "/api/v1/inbox": {
            "get": {
                "summary": "Open cases waiting for the signed-in role at this node",
                "security": _BEARER,
                "responses": {"200": _json(_object(cases={"type": "array"})), **_errors(401, 405)},
            }
        },
        "/api/v1/public/progress": {
            "post": {
                "summary": "Citizen progress query: case number plus ID number (or credit code); one answer "
                "(404) for every mismatch",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["case_no"],
                        "properties": {
                            "case_no": {"type": "string"},
                            "id_number": {"type": "string"},
                            "credit_code": {"type": "string"},
                        },
                        "anyOf": [
                            {"required": ["id_number"], "properties": {"id_number": {"minLength": 1}}},
                            {"required": ["credit_code"], "properties": {"credit_code": {"minLength": 1}}},
                        ],
                    }
                ),
                "responses": {"200": _json({"type": "object"}), **_errors(400, 404, 405, 413, 429)},
            }
        },
        "/api/v1/quarantine": {
            "get": {
                "summary": "Documents refused for a bad signature or hash chain (ops, admin, supervisor)",
                "security": _BEARER,
                "responses": {"200": _json(_object(quarantined={"type": "array"})), **_errors(401, 403, 405)},
            }
        },
        "/api/v1/ops/nodes": {
            "get": {
                "summary": "Every node's status" + _OPS_NOTE,
                "security": _BEARER,
                "parameters": [
                    _query("status", {"enum": ["online", "offline", "unknown"]}),
                    _query("tier", {"enum": [tier.key for tier in Tier]}),
                ],
                "responses": {"200": _json(_object(nodes={"type": "array"})), **_errors(400, 401, 403, 404, 405)},
            }
        },
        "/api/v1/ops/links": {
            "get": {
                "summary": "Every replication link's state" + _OPS_NOTE,
                "security": _BEARER,
                "parameters": [_query("state", {"enum": ["ok", "unknown", "offline", "stuck", "error", "lagging"]})],
                "responses": {"200": _json(_object(links={"type": "array"})), **_errors(400, 401, 403, 404, 405)},
            }
        },
        "/api/v1/ops/alerts": {
            "get": {
                "summary": "Alerts, newest first" + _OPS_NOTE,
                "security": _BEARER,
                "parameters": [
                    _query("state", {"enum": ["open", "closed", "all"]}),
                    _query("limit", {"type": "string", "pattern": "^[0-9]{1,6}$", "description": "1–5000"}),
                ],
                "responses": {"200": _json(_object(alerts={"type": "array"})), **_errors(400, 401, 403, 404, 405)},
            }
        },
        "/api/v1/ops/alerts/{alert_id}/ack": {
            "post": {
                "summary": "Acknowledge an alert" + _OPS_NOTE,
                "security": _BEARER,
                "parameters": [
                    _path_param("alert_id", {"type": "integer", "minimum": 0, "maximum": 2**53}),
                    IDEMPOTENCY_KEY,
                ],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403, 404, 405, 409, 422)},
            }
        },
        "/api/v1/ops/figures": {
            "get": {
                "summary": "Case figures by tier and matter" + _OPS_NOTE,
                "security": _BEARER,
                "responses": {"200": _json({"type": "object"}), **_errors(401, 403, 404, 405)},
            }
        },
        "/api/v1/ops/figures.csv": {
            "get": {
                "summary": "The same figures as CSV" + _OPS_NOTE,
                "security": _BEARER,
                "responses": {
                    "200": {"description": "ok", "content": {"text/csv": {"schema": {"type": "string"}}}},
                    **_errors(401, 403, 404, 405),
                },
            }
        },
    },
}


# --- around the case (issue 14) and 一件事 packages (issue 17) -------------------------------------------------
# Their views refuse a malformed request (not JSON, a field of the wrong type or length) with 400 and
# a request the schema allows but the rules do not (a slot in the past, a full slot, an unanswered
# department) with 404/409/422: the schema states the shape, the answers name the rule.

_ANY = _json({"type": "object"})
_PUBLIC_ERRORS = _errors(400, 404, 405, 409, 413, 422, 429)
_STAFF_ERRORS = _errors(400, 401, 403, 404, 405, 409, 413, 422, 429)
_TOKEN_PATH = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9]+$"}
_IDEMPOTENT = [IDEMPOTENCY_KEY]
_SLOT_START = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}$"}
_LEVEL = {"type": "integer", "minimum": 1, "maximum": 5}
_SESSION = {
    "type": "object",
    "required": ["date", "mode", "place"],
    "properties": {
        "date": {"type": "string", "format": "date"},
        "mode": {"enum": ["onsite", "online"]},
        "place": text(100),
        "departments": {"type": "array", "minItems": 1, "maxItems": 20, "items": text(40)},
    },
}


def _public(summary: str, **operation: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {"200": _ANY, **_PUBLIC_ERRORS}, **operation}


def _staff(summary: str, **operation: Any) -> dict[str, Any]:
    return {"summary": summary, "security": _BEARER, "responses": {"200": _ANY, **_STAFF_ERRORS}, **operation}


def _creates(operation: dict[str, Any]) -> dict[str, Any]:
    """A creating operation: 201 when it created something (200 when it answered without, e.g. a notice)."""
    return {
        **operation,
        "parameters": [*operation.get("parameters", []), *_IDEMPOTENT],
        "responses": {"201": _ANY, **operation["responses"]},
    }


AROUND_PATHS: dict[str, Any] = {
    "/api/v1/assistant": {
        "get": _public(
            "智能问答: the three likeliest matters for a question in everyday words",
            parameters=[{**_query("q", text(200)), "required": True}],
        )
    },
    "/api/v1/assistant/questions": {
        "post": _creates(
            _public(
                "Ask a person (人工客服); answers the question id and a code to read the answer",
                requestBody=_body({"type": "object", "required": ["question"], "properties": {"question": text(200)}}),
            )
        ),
        "get": _staff("Questions waiting for a person (acceptor, supervisor, admin)"),
    },
    "/api/v1/assistant/questions/{question_id}": {
        "get": _public(
            "The answer to one's question (with its code)",
            parameters=[
                _path_param("question_id", {**_TOKEN_PATH, "maxLength": 32}),
                {**_query("code", {"type": "string", "minLength": 1, "maxLength": 64}), "required": True},
            ],
        )
    },
    "/api/v1/assistant/questions/{question_id}/answer": {
        "post": _staff(
            "Answer a waiting question",
            parameters=[_path_param("question_id", _TOKEN_PATH)],
            requestBody=_body({"type": "object", "required": ["answer"], "properties": {"answer": text(2000)}}),
        )
    },
    "/api/v1/appointments/slots": {
        "get": _public(
            "Slots of a node's windows on a day: {slots: [{start, end, free}]}",
            parameters=[
                _query("node", {"type": "string", "pattern": DIVISION_CODE}),
                {**_query("date", {"type": "string", "format": "date"}), "required": True},
                _query("matter_code", {"type": "string", "minLength": 1, "maxLength": 64}),
            ],
        )
    },
    "/api/v1/appointments": {
        "post": _creates(
            _public(
                "Book a slot (the window's node decides its share; 409 when full)",
                requestBody=_body(
                    {
                        "type": "object",
                        "required": ["matter_code", "start", "id_number"],
                        "properties": {
                            "node": {"type": "string", "pattern": DIVISION_CODE},
                            "matter_code": {"type": "string", "minLength": 1, "maxLength": 64},
                            "start": _SLOT_START,
                            "id_number": _ID_NUMBER,
                        },
                    }
                ),
            )
        )
    },
    "/api/v1/appointments/{appointment_id}/cancel": {
        "post": _public(
            "Cancel one's own booking",
            parameters=[_path_param("appointment_id", _TOKEN_PATH)],
            requestBody=_body({"type": "object", "required": ["id_number"], "properties": {"id_number": _ID_NUMBER}}),
        )
    },
    "/api/v1/queue/tickets": {
        "post": _creates(
            _public(
                "Take a number (取号): walk-in, by matter, or on today's appointment",
                requestBody=_body(
                    {
                        "type": "object",
                        "properties": {
                            "matter_code": {"type": "string", "minLength": 1, "maxLength": 64},
                            "appointment_id": _TOKEN_PATH,
                            "id_number": _ID_NUMBER,
                        },
                    }
                ),
            )
        )
    },
    "/api/v1/queue": {"get": _public("The hall screen: numbers called and how many wait, per window group")},
    "/api/v1/queue/call": {
        "post": _staff(
            "Call the next number to a window (acceptor, approver, admin)",
            requestBody=_body(
                {
                    "type": "object",
                    "required": ["window"],
                    "properties": {
                        "group": {"type": ["string", "null"], "minLength": 1, "maxLength": 40},
                        "window": text(20),
                    },
                }
            ),
        )
    },
    "/api/v1/queue/tickets/{ticket_id}/finish": {
        "post": _staff(
            "Served, or no-show",
            parameters=[_path_param("ticket_id", _TOKEN_PATH)],
            requestBody=_body(
                {"type": "object", "required": ["outcome"], "properties": {"outcome": {"enum": ["served", "no_show"]}}}
            ),
        )
    },
    "/api/v1/ratings/visits": {
        "post": _creates(
            _public(
                "好差评 of a window visit (一次一评): the slip's code or the ticket id",
                requestBody=_body(
                    {
                        "type": "object",
                        "required": ["level"],
                        "properties": {
                            "code": {"type": "string", "pattern": "^[0-9]{8}$"},
                            "ticket_id": _TOKEN_PATH,
                            "level": _LEVEL,
                            "comment": text(500, required=False),
                        },
                    }
                ),
            )
        )
    },
    "/api/v1/ratings/figures": {
        "get": _staff(
            "好差评 figures (supervisor, ops, admin); nobody who rated is named",
            parameters=[_query("by", {"enum": ["node", "window", "staff", "matter_code"]})],
        )
    },
    "/api/v1/rectifications": {"get": _staff("Rectification tickets of poor ratings (approver, supervisor)")},
    "/api/v1/rectifications/{ticket_id}/{step}": {
        "post": _staff(
            "Follow a ticket: contact, outcome, appeal, decision (a supervisor decides appeals)",
            parameters=[
                _path_param("ticket_id", _TOKEN_PATH),
                _path_param("step", {"enum": ["contact", "outcome", "appeal", "decision"]}),
            ],
            requestBody=_body(
                {
                    "type": "object",
                    "properties": {
                        "note": text(1000),
                        "outcome": text(1000),
                        "reason": text(1000),
                        "decision": text(1000),
                        "upheld": {"type": "boolean"},
                    },
                }
            ),
        )
    },
    "/api/v1/packages": {"get": _public("一件事 packages: merged materials, combined fee, one promise")},
    "/api/v1/packages/{code}": {
        "get": _public(
            "One package's guide", parameters=[_path_param("code", {"type": "string", "minLength": 1, "maxLength": 40})]
        )
    },
    "/api/v1/packages/{code}/cases": {
        "post": _creates(
            _staff(
                "Accept a package: one sub-case per matter (acceptor); 422 with one notice",
                parameters=[_path_param("code", {"type": "string", "minLength": 1, "maxLength": 40})],
                requestBody=_body(
                    {
                        "type": "object",
                        "required": ["applicant"],
                        "properties": {
                            "applicant": _APPLICANT,
                            "materials": {"type": "array", "maxItems": MAX_MATERIALS, "items": _MATERIAL_CODE},
                        },
                    }
                ),
            )
        )
    },
    "/api/v1/package-cases/{package_no}": {
        "get": _staff("A package as its sub-cases make it", parameters=[_path_param("package_no", CASE_NO)])
    },
    "/api/v1/package-cases/{package_no}/supplement": {
        "post": _staff(
            "One supplement answering every department's request (acceptor)",
            parameters=[_path_param("package_no", CASE_NO)],
            requestBody=_body(
                {
                    "type": "object",
                    "required": ["answers"],
                    "properties": {
                        "answers": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {
                                    "materials": {"type": "array", "maxItems": 20, "items": _MATERIAL_CODE},
                                    "note": text(500, required=False),
                                },
                            },
                        }
                    },
                }
            ),
        )
    },
    "/api/v1/package-cases/{package_no}/deliver": {
        "post": _staff(
            "One delivery of every result once all are decided (acceptor)",
            parameters=[_path_param("package_no", CASE_NO)],
            requestBody=_body({"type": "object", "properties": {"method": {"enum": ["window", "post", "electronic"]}}}),
        )
    },
    "/api/v1/package-cases/{package_no}/session": {
        "post": _staff(
            "The joint session of a joint review (lead department's approver)",
            parameters=[_path_param("package_no", CASE_NO)],
            requestBody=_body(_SESSION),
        )
    },
    "/api/v1/package-cases/{package_no}/consolidate": {
        "post": _staff(
            "The consolidated decision of a joint review (lead department's approver)",
            parameters=[_path_param("package_no", CASE_NO)],
            requestBody=_body({"type": "object", "required": ["decision"], "properties": {"decision": text(300)}}),
        )
    },
}
SPEC["paths"].update(AROUND_PATHS)

# --- results (issue 15) and identity (issue 12) --------------------------------------------------------------
_PDF = {
    "description": "the sealed PDF",
    "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
}
_CASE_PARAM = [_path_param("case_no", CASE_NO)]
_MULTIPART_PHOTO = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["id_number", "photo"],
                "properties": {
                    "id_number": _ID_NUMBER,
                    "photo": {"type": "string", "format": "binary"},
                    "photo_turned": {"type": "string", "format": "binary"},
                    "channel": {"enum": ["window", "kiosk", "online"]},
                    "turn": {"enum": ["left", "right"]},
                },
            }
        }
    },
}
_MULTIPART_MATERIAL = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["id_number", "material_code", "grade", "file"],
                "properties": {
                    "id_number": _ID_NUMBER,
                    "material_code": {"type": "string", "minLength": 1, "maxLength": 20, "pattern": NOT_BLANK},
                    "grade": {"type": "string", "minLength": 1, "maxLength": 20, "pattern": NOT_BLANK},
                    "valid_until": {"type": "string", "format": "date"},
                    "file": {"type": "string", "format": "binary"},
                },
            }
        }
    },
}
RESULT_AND_IDENTITY_PATHS: dict[str, Any] = {
    "/api/v1/cases/{case_no}/result.pdf": {
        "get": {
            "summary": "The sealed result document (staff)",
            "security": _BEARER,
            "parameters": _CASE_PARAM,
            "responses": {"200": _PDF, **_STAFF_ERRORS},
        }
    },
    "/api/v1/cases/{case_no}/receipt.pdf": {
        "get": {
            "summary": "The sealed electronic receipt of a paid fee (staff)",
            "security": _BEARER,
            "parameters": _CASE_PARAM,
            "responses": {"200": _PDF, **_STAFF_ERRORS},
        }
    },
    "/api/v1/cases/{case_no}/payment": {
        "get": _staff("The case's payment order (缴款码, state, amounts)", parameters=_CASE_PARAM),
        "post": _creates(_staff("Issue the payment code again (staff)", parameters=_CASE_PARAM)),
    },
    "/api/v1/cases/{case_no}/post": {
        "post": _creates(
            _staff(
                "Send the decided case's result by post (staff): the recipient's name, phone and address",
                parameters=_CASE_PARAM,
                requestBody=_body(
                    {
                        "type": "object",
                        "required": ["name", "phone", "address"],
                        "properties": {"name": text(100), "phone": text(20), "address": text(400)},
                    }
                ),
            )
        )
    },
    "/api/v1/identity/verify": {
        "post": _staff(
            "Face verification: a photo and an ID number (acceptor, approver, admin)", requestBody=_MULTIPART_PHOTO
        )
    },
    "/api/v1/identity/person": {
        "post": _staff(
            "The register data after a match (the verification's id)",
            requestBody=_body(
                {
                    "type": "object",
                    "required": ["id_number", "verification_id"],
                    "properties": {
                        "id_number": _ID_NUMBER,
                        "verification_id": {"type": "string", "minLength": 1, "maxLength": 100},
                        "matter_code": {"type": ["string", "null"], "maxLength": 64},
                    },
                }
            ),
        )
    },
    "/api/v1/identity/cases": {
        "post": _creates(
            _staff(
                "Accept a case with a face verification and library materials (acceptor, admin)",
                requestBody=_body(
                    {
                        "type": "object",
                        "required": ["matter_code", "applicant"],
                        "properties": {
                            "matter_code": {"type": "string", "minLength": 1, "maxLength": 64},
                            "applicant": _APPLICANT,
                            "materials": {"type": "array", "maxItems": MAX_MATERIALS, "items": _MATERIAL_CODE},
                            "verification_id": {"type": ["string", "null"], "maxLength": 100},
                            "library_materials": {
                                "type": ["array", "null"],
                                "maxItems": 20,
                                "items": {"type": "string", "minLength": 1, "maxLength": 80},
                            },
                        },
                    }
                ),
            )
        )
    },
    "/api/v1/identity/cases/{case_no}": {
        "get": _staff("The verification and library links recorded on a case", parameters=_CASE_PARAM)
    },
    "/api/v1/identity/materials": {
        "post": _creates(
            _staff("Store a material in the library once (acceptor, admin)", requestBody=_MULTIPART_MATERIAL)
        )
    },
    "/api/v1/identity/public/uses": {
        "post": _public(
            "Every use of the applicant's data at this node (case number plus ID number)",
            requestBody=_body(
                {
                    "type": "object",
                    "required": ["case_no", "id_number"],
                    "properties": {
                        "case_no": {"type": "string", "minLength": 1},
                        "id_number": {"type": "string", "minLength": 1},
                    },
                }
            ),
        )
    },
}
SPEC["paths"].update(RESULT_AND_IDENTITY_PATHS)


def _location_codes(matter: Matter, tree: DivisionTree, here: str, catalogue: Catalogue) -> list[str]:
    """The division codes that give ``matter`` a handling node when accepted at ``here`` (the acceptance's check)."""
    valid = []
    for division in tree:
        try:
            handling_node(matter, tree, here, division.code, catalogue)
        except DomainError:
            continue
        valid.append(division.code)
    return valid


def _acceptance_variants(catalogue: Catalogue, tree: DivisionTree, here: str) -> tuple[list[Any], dict[str, Any]]:
    """One request variant per matter this node can accept, and the sets of location codes they share."""
    variants: list[Any] = []
    location_sets: dict[tuple[str, ...], str] = {}
    for matter in catalogue.matters():
        field = matter.location_field
        properties: dict[str, Any] = {
            "matter_code": {"const": matter.code},
            "materials": {
                "type": ["array", "null"],
                "maxItems": MAX_MATERIALS,
                "items": {"enum": [m.code for m in matter.materials]} if matter.materials else False,
            },
        }
        required = ["matter_code", "applicant"]
        if field is None:
            try:
                handling_node(matter, tree, here, None, catalogue)
            except DomainError:
                continue  # a "nearest" matter of a lower tier: not accepted at this node at all
        else:
            codes = tuple(_location_codes(matter, tree, here, catalogue))
            if not codes:
                continue
            name = location_sets.setdefault(codes, f"Locations{len(location_sets) + 1}")
            properties[field] = {"$ref": f"#/components/schemas/{name}"}
            required.append(field)
        variants.append({"required": required, "properties": properties})
    components = {name: {"enum": list(codes)} for codes, name in location_sets.items()}
    return variants, components


_cache: dict[tuple[int, str, int], dict[str, Any]] = {}
_cache_lock = threading.Lock()


def spec_for(catalogue: Catalogue, tree: DivisionTree, here: str) -> dict[str, Any]:
    """The description served by node ``here``: :data:`SPEC` plus what its catalogue version makes valid."""
    key = (catalogue.version, here, len(SPEC["paths"]))
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    spec = copy.deepcopy(SPEC)
    variants, locations = _acceptance_variants(catalogue, tree, here)
    body = spec["paths"]["/api/v1/cases"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    if variants:  # a catalogue with no matter this node can accept leaves the body as SPEC has it
        body["oneOf"] = variants
    # The identity route accepts what POST /cases accepts, with a verification and library materials.
    identity = spec["paths"]["/api/v1/identity/cases"]["post"]["requestBody"]["content"]["application/json"]
    extra = identity["schema"]["properties"]
    identity["schema"] = copy.deepcopy(body)
    identity["schema"].setdefault("properties", {}).update(
        {key: extra[key] for key in ("verification_id", "library_materials")}
    )
    spec["components"]["schemas"].update(locations)
    spec["components"]["schemas"]["Division"] = {"enum": [division.code for division in tree]}
    with _cache_lock:
        _cache.clear()
        _cache[key] = spec
    return spec
