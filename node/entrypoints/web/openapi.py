"""The OpenAPI 3.1 description of ``/api/v1`` (served at ``/api/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

from node import __version__
from node.domain.case import CaseState

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _json(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_APPLICANT = {
    "oneOf": [
        {
            "type": "object",
            "required": ["kind", "id_number", "name"],
            "properties": {
                "kind": {"const": "person"},
                "id_number": {"type": "string", "description": "GB 11643 resident ID number"},
                "name": {"type": "string", "maxLength": 100},
            },
        },
        {
            "type": "object",
            "required": ["kind", "credit_code", "name"],
            "properties": {
                "kind": {"const": "enterprise"},
                "credit_code": {"type": "string", "description": "GB 32100 unified social credit code"},
                "name": {"type": "string", "maxLength": 100},
            },
        },
    ]
}

_CASE = {
    "type": "object",
    "properties": {
        "case_no": {"type": "string"},
        "matter_code": {"type": "string"},
        "state": {"type": "string"},
        "accepting_node": {"type": "string"},
        "handling_node": {"type": "string"},
        "deadline": {"type": ["string", "null"], "format": "date"},
        "timeline": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "node": {"type": "string"},
                    "actor": {"type": ["string", "null"]},
                    "at": {"type": "string"},
                },
            },
        },
        "allowed_actions": {"type": "array", "items": {"type": "string"}},
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "通办 Tongban node API", "version": __version__},
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
        },
    },
    "paths": {
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
                    "200": _json({"type": "object", "properties": {"token": {"type": "string"}}}),
                    **_errors(400, 401, 429),
                },
            }
        },
        "/api/v1/auth/logout": {
            "post": {
                "summary": "End this token; with everywhere=true, every page session and token of the account",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"everywhere": {"type": "boolean"}}}
                        }
                    },
                },
                "responses": {"200": _json({"type": "object"}), **_errors(401)},
            }
        },
        "/api/v1/auth/password": {
            "post": {
                "summary": "Change one's own password; every session and token of the account ends",
                "security": [{"bearer": []}],
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["current_password", "new_password"],
                        "properties": {
                            "current_password": {"type": "string", "maxLength": 200},
                            "new_password": {"type": "string", "minLength": 10, "maxLength": 128},
                        },
                    }
                ),
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401)},
            }
        },
        "/api/v1/accounts/{username}/disable": {
            "post": {
                "summary": "Disable a staff account (admin): its sessions and tokens end at once",
                "security": [{"bearer": []}],
                "parameters": [{"name": "username", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403, 404)},
            }
        },
        "/api/v1/accounts/{username}/enable": {
            "post": {
                "summary": "Enable a disabled staff account again (admin)",
                "security": [{"bearer": []}],
                "parameters": [{"name": "username", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403, 404)},
            }
        },
        "/api/v1/catalog": {
            "put": {
                "summary": "Publish a new catalogue version (admin, at the city only; version = current + 1)",
                "security": [{"bearer": []}],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401, 403, 409)},
            }
        },
        "/api/v1/catalog/matters": {
            "get": {"summary": "The catalogue of general matters", "responses": {"200": _json({"type": "object"})}}
        },
        "/api/v1/cases": {
            "post": {
                "summary": "Accept an application (受理); 200 with outcome=incomplete lists every missing material",
                "security": [{"bearer": []}],
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["matter_code", "applicant"],
                        "properties": {
                            "matter_code": {"type": "string"},
                            "applicant": _APPLICANT,
                            "materials": {"type": "array", "items": {"type": "string"}},
                            "residence_code": {"type": "string"},
                            "property_code": {"type": "string"},
                            "registered_code": {"type": "string"},
                            "settle_on_spot": {"type": "boolean"},
                            "refuse_reason": {"type": "string", "description": "不予受理 with this reason"},
                        },
                    }
                ),
                "responses": {
                    "201": _json(_CASE, "accepted"),
                    "200": _json({"type": "object", "properties": {"outcome": {"const": "incomplete"}}}),
                    **_errors(400, 401, 403, 404, 409, 413),
                },
            },
            "get": {
                "summary": "Search cases held by this node",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 100}},
                    {"name": "state", "in": "query", "schema": {"enum": sorted(s.value for s in CaseState)}},
                ],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 401)},
            },
        },
        "/api/v1/cases/{case_no}": {
            "get": {
                "summary": "One case with its timeline",
                "security": [{"bearer": []}],
                "parameters": [{"name": "case_no", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json(_CASE), **_errors(401, 404)},
            }
        },
        "/api/v1/cases/{case_no}/actions": {
            "post": {
                "summary": "Act on a case: approve, reject, request_supplement, supplement, receive, record_result, "
                "deliver, transfer, withdraw, evaluate",
                "security": [{"bearer": []}],
                "parameters": [{"name": "case_no", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["action"],
                        "properties": {
                            "action": {"type": "string"},
                            "reason": {"type": "string"},
                            "summary": {"type": "string"},
                            "method": {"enum": ["window", "post", "electronic"]},
                            "new_handling_node": {"type": "string"},
                            "level": {"type": "integer", "minimum": 1, "maximum": 5},
                            "signed_request": {
                                "type": "string",
                                "maxLength": 60,
                                "description": "withdraw by staff: reference of the applicant's signed request",
                            },
                        },
                    }
                ),
                "responses": {"200": _json(_CASE), **_errors(400, 401, 403, 404, 409)},
            }
        },
        "/api/v1/inbox": {
            "get": {
                "summary": "Open cases waiting for the signed-in role at this node",
                "security": [{"bearer": []}],
                "responses": {"200": _json({"type": "object"}), **_errors(401)},
            }
        },
        "/api/v1/public/progress": {
            "post": {
                "summary": "Citizen progress query: case number plus ID number (or credit code)",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["case_no"],
                        "properties": {
                            "case_no": {"type": "string"},
                            "id_number": {"type": "string"},
                            "credit_code": {"type": "string"},
                        },
                    }
                ),
                "responses": {"200": _json({"type": "object"}), **_errors(400, 404, 429)},
            }
        },
        "/api/v1/quarantine": {
            "get": {
                "summary": "Documents refused for a bad signature or hash chain",
                "security": [{"bearer": []}],
                "responses": {"200": _json({"type": "object"}), **_errors(401, 403)},
            }
        },
    },
}
