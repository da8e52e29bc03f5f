"""gunicorn settings for a Tongban node (bind and worker count come from the command line)."""

worker_class = "gthread"
# Open inbox pages each hold a thread for their event stream (at most 60 s at a time).
threads = 16
timeout = 60
graceful_timeout = 10
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = "warning"
