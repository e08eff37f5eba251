"""Entry point gunicorn loads in each worker: `gunicorn -c conf/gunicorn.conf.py login_service.wsgi:app`."""

from login_service import create_app

app = create_app()
