"""Entry point gunicorn loads in each worker: `gunicorn -c conf/gunicorn.conf.py profile_service.wsgi:app`."""

from profile_service import create_app

app = create_app()
