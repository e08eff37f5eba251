"""Entry point gunicorn loads in each worker: `gunicorn -c conf/gunicorn.conf.py chat_service.wsgi:app`."""

from chat_service import create_app

app = create_app()
