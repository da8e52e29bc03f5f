"""Entry points: the web app, the command line and the Celery tasks. They stay thin."""
