"""The node's Flask application factory: one blueprint per job, registered here.

- ``auth``: signing in to the pages (server-side sessions, lockout, CSRF) and the hooks every page shares;
- ``pages``: the staff and citizen pages; ``catalogue``: the catalogue pages;
- ``api``: the REST API (bearer tokens); ``ops``: the city's operations dashboard and its JSON;
- ``metrics``: ``/metrics``, served by every node; ``health``: ``/healthz``;
- ``sync_api``: the parent side of replication links.

Shared by all of them: :mod:`http` (the node's context, sessions and bearer tokens, the audit trail,
``DomainError`` → HTTP status, JSON errors and the error page), :mod:`limits` (request rates),
:mod:`i18n` and :mod:`labels` (the text), :mod:`templating` (what every template sees). A new page
goes into the blueprint of its feature, or a new blueprint registered here and named in
``use_for_pages``; its text is written in Chinese inside ``_()``, then ``make messages`` and the
English in ``node/translations/en``.
"""

from __future__ import annotations

from flask import Flask

from node.adapters.mqtt import notice_topic
from node.bootstrap import NodeContext
from node.entrypoints.web import (
    api,
    around,
    auth,
    catalogue_pages,
    health,
    i18n,
    identity,
    limits,
    metrics,
    ops,
    packages,
    pages,
    results,
    sync_api,
)
from node.entrypoints.web.http import API_LIFETIMES, API_LIFETIMES_KEY, PAGE_LIFETIMES, PAGE_LIFETIMES_KEY
from node.entrypoints.web.notices import NoticeBoard
from node.entrypoints.web.templating import template_context


def create_app(context: NodeContext) -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = context.config.secret_key
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.extensions["tongban"] = context
    app.config[PAGE_LIFETIMES_KEY] = PAGE_LIFETIMES
    app.config[API_LIFETIMES_KEY] = API_LIFETIMES
    auth.init_app(app)
    limits.init_app(app, context)
    board = NoticeBoard()
    app.extensions["tongban.notices"] = board
    if context.mqtt is not None:
        context.mqtt.subscribe(notice_topic(context.config.code), board.post)

    i18n.init_app(app)
    app.context_processor(template_context)
    for blueprint in (
        health.blueprint,
        metrics.blueprint,
        api.blueprint,
        auth.blueprint,
        pages.blueprint,
        catalogue_pages.blueprint,
        sync_api.blueprint,
        ops.blueprint,
        around.api,
        around.pages,
        packages.api,
        packages.pages,
        results.blueprint,
        identity.blueprint,
    ):
        app.register_blueprint(blueprint)
    # The signed-in pages: language choice, CSRF check and security headers (see auth).
    auth.use_for_pages(app, {"auth", "pages", "catalogue", "ops.pages", "around", "packages", "results.pages"})
    return app
