"""一件事一次办 over HTTP: the packages of the catalogue, accepting one, the package's view, its one supplement,
its one delivery and a joint review's consolidated decision; and the window's page of a package.

Thin: parse, hand to :class:`node.service_layer.packages.PackageService`, answer JSON or the page.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, render_template
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from node.domain.case import ACCEPTOR, ADMIN, APPROVER, SUPERVISOR
from node.domain.errors import DomainError, ErrorKind
from node.entrypoints.web.auth import staff_page
from node.entrypoints.web.commands import accept_package_from_json
from node.entrypoints.web.http import STATUS, context, domain_error_json, json_body, json_http_error, require_role
from node.entrypoints.web.i18n import bilingual
from node.entrypoints.web.idempotency import idempotent
from node.service_layer.packages import PackageService

api = Blueprint("packages_api", __name__, url_prefix="/api/v1")
pages = Blueprint("packages", __name__)
STAFF = (ACCEPTOR, APPROVER, SUPERVISOR, ADMIN)


def service() -> PackageService:
    packages = context().packages
    if packages is None:
        raise DomainError("service_unavailable", "本节点未开通一件事", "no packages here", ErrorKind.NOT_FOUND)
    return packages


api.register_error_handler(HTTPException, json_http_error)


api.register_error_handler(DomainError, domain_error_json)


@api.get("/packages")
def catalogue_packages() -> ResponseReturnValue:
    """The catalogue's packages with their merged material list, fee and promise (public, like the guide)."""
    return jsonify({"packages": [service().guide(p) for p in service().packages().values()]})


@api.get("/packages/<code>")
def package_guide(code: str) -> ResponseReturnValue:
    return jsonify(service().guide(service().package(code[:40])))


@api.post("/packages/<code>/cases")
@require_role(ACCEPTOR, ADMIN)
@idempotent
def accept_package(code: str) -> ResponseReturnValue:
    outcome = context().bus.handle(accept_package_from_json(g.actor, code, json_body()))
    if outcome["outcome"] == "incomplete":
        return jsonify({"error": "materials_missing", **outcome}), 422
    return jsonify(service().describe(outcome["package_no"])), 201


@api.get("/package-cases/<package_no>")
@require_role(*STAFF)
def package_case(package_no: str) -> ResponseReturnValue:
    return jsonify(service().describe(package_no))


@api.post("/package-cases/<package_no>/supplement")
@require_role(ACCEPTOR, ADMIN)
def supplement(package_no: str) -> ResponseReturnValue:
    return jsonify(service().supplement(package_no, g.actor, json_body().get("answers")))


@api.post("/package-cases/<package_no>/deliver")
@require_role(ACCEPTOR, ADMIN)
def deliver(package_no: str) -> ResponseReturnValue:
    return jsonify(service().deliver(package_no, g.actor, json_body().get("method", "window")))


@api.post("/package-cases/<package_no>/session")
@require_role(APPROVER)
def schedule_session(package_no: str) -> ResponseReturnValue:
    return jsonify(service().schedule_session(package_no, g.actor, json_body()))


@api.post("/package-cases/<package_no>/consolidate")
@require_role(APPROVER)
def consolidate(package_no: str) -> ResponseReturnValue:
    return jsonify(service().consolidate(package_no, g.actor, json_body().get("decision")))


@pages.get("/packages/<package_no>")
@staff_page()
def package_page(package_no: str) -> ResponseReturnValue:
    try:
        view = service().describe(package_no[:80])
    except DomainError as exc:
        return render_template("error.html", error=bilingual(exc), status=STATUS[exc.kind]), STATUS[exc.kind]
    return render_template("package.html", package=view)
