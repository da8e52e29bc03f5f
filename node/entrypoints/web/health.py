"""``GET /healthz``: who this node is and whether its store and broker answer."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from node.entrypoints.web.http import context as node_context

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    context = node_context()
    docstore_ok = context.store.reachable()
    mqtt_ok = context.mqtt is not None and context.mqtt.connected
    body = {
        "code": context.division.code,
        "name": context.division.name,
        "tier": context.division.tier.name.lower(),
        "parent": context.division.parent,
        "docstore": {"reachable": docstore_ok, "url": context.config.docstore_url},
        "mqtt": {"connected": mqtt_ok, "port": context.config.mqtt_port},
        "version": context.version,
        "ok": docstore_ok and mqtt_ok,
    }
    return jsonify(body), 200 if body["ok"] else 503
