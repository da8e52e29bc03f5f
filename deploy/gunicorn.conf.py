"""gunicorn settings for a Tongban node (bind and worker count come from the command line)."""

worker_class = "gthread"
threads = 8
timeout = 60
graceful_timeout = 10
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = "warning"
