"""gunicorn settings for a Tongban node (bind and worker count come from the command line)."""

worker_class = "gthread"
# An open inbox event stream holds a thread (at most 4 per worker, 25 s each: see web/pages.py).
threads = 16
timeout = 60
graceful_timeout = 10
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = "warning"
