"""The node's Flask application factory."""

from __future__ import annotations

from flask import Flask

from node.adapters.mqtt import notice_topic
from node.bootstrap import NodeContext
from node.entrypoints.web.notices import NoticeBoard


def create_app(context: NodeContext) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = context.config.secret_key
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.extensions["tongban"] = context
    board = NoticeBoard()
    app.extensions["tongban.notices"] = board
    if context.mqtt is not None:
        context.mqtt.subscribe(notice_topic(context.config.code), board.post)

    from node.entrypoints.web.api import blueprint as api
    from node.entrypoints.web.catalogue_pages import blueprint as catalogue_pages
    from node.entrypoints.web.health import blueprint as health
    from node.entrypoints.web.ops import blueprint as ops
    from node.entrypoints.web.pages import pages
    from node.entrypoints.web.sync_api import blueprint as sync_api

    app.register_blueprint(health)
    app.register_blueprint(api)
    app.register_blueprint(pages)
    app.register_blueprint(catalogue_pages)
    app.register_blueprint(sync_api)
    app.register_blueprint(ops)
    return app
