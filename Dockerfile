# One image for the login, profile and chat services: they share service_kit, the
# dependencies and the gunicorn settings, and differ only in the module gunicorn loads,
# which each container names in its command (compose.yaml). Why one image: docs/docker.md.
#
#   docker build -t chatsys .
#   docker run -e MONGO_URI=mongodb://mongo:27017/chatsys -e PORT=4100 chatsys \
#       gunicorn -c conf/gunicorn.conf.py login_service.wsgi:app
#
# PYTHON_IMAGE: the base image; any Debian-like image with Python 3.11, its venv module and
# useradd will do (scripts/docker-local-images.sh makes one where no registry answers).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Dependencies before the code: this layer is rebuilt only when requirements.lock changes.
# The lock pins every package with its hashes; pip refuses any file that does not match.
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && pip install --require-hashes -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock

RUN groupadd --system --gid 10001 chatsys \
    && useradd --system --uid 10001 --gid chatsys --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin chatsys

# The code stays owned by root: the service user can read it, not change it.
WORKDIR /app
COPY service_kit/ service_kit/
COPY login_service/ login_service/
COPY profile_service/ profile_service/
COPY chat_service/ chat_service/
COPY conf/gunicorn.conf.py conf/gunicorn.conf.py
COPY docker/entrypoint.sh docker/entrypoint.sh
RUN python -m compileall -q service_kit login_service profile_service chat_service

# Inside a container the service must listen on the container's network, not loopback.
ENV SERVICE_HOST=0.0.0.0
USER chatsys
EXPOSE 4000 4100 4200

# Liveness only (/health checks no dependency): the database being down must not get
# healthy containers restarted. HAProxy routes on /ready. The slim image has no curl.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['PORT'], timeout=2)"

ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["gunicorn", "-c", "conf/gunicorn.conf.py", "chat_service.wsgi:app"]
