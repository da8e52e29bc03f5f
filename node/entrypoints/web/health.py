"""``GET /healthz``: who this node is and whether its store and broker answer."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from node.bootstrap import NodeContext

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    context: NodeContext = current_app.extensions["tongban"]
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
