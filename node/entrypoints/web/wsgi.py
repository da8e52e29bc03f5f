"""The WSGI entry point gunicorn loads: the app of the node named by ``TONGBAN_NODE_CONFIG``."""

from node.bootstrap import bootstrap, config_from_env
from node.entrypoints.web import create_app

app = create_app(bootstrap(config_from_env()))
