#!/usr/bin/env bash
# Entry point of the service image: wait, for a bounded time, until the database answers
# a ping, then become the given command (gunicorn) with all its logs on stdout.
set -euo pipefail

usage() {
    echo "usage: $0 COMMAND [ARG...]   e.g. $0 gunicorn -c conf/gunicorn.conf.py chat_service.wsgi:app"
    echo "env: MONGO_URI (required, names the database), PORT (required), DB_WAIT_SECONDS (default 60),"
    echo "     INSTANCE_PORT_FROM_ADDRESS (on: also listen on a port unique to this replica, named in X-Instance),"
    echo "     METRICS_SERVER_FROM_DNS (on: label the metrics server=<service>-<replica>, from the container's DNS name)"
}
if (($# == 0)); then usage >&2; exit 2; fi
case $1 in -h|--help) usage; exit 0 ;; esac

: "${MONGO_URI:?must be set and name a database, e.g. mongodb://mongo:27017/chatsys}"
# The image's HEALTHCHECK probes http://127.0.0.1:$PORT/health, so the port must be explicit.
: "${PORT:?must be set (login 4100, profile 4200, chat 4000)}"
export DB_WAIT_SECONDS=${DB_WAIT_SECONDS:-60}

# A service starts fine without its database (it answers /ready with 503), but waiting here
# makes a container that can never reach it fail loudly instead of running half-alive.
python - <<'PY'
import os
import sys
import time

import pymongo
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError
from pymongo.uri_parser import parse_uri

uri = os.environ["MONGO_URI"]
try:
    parsed = parse_uri(uri)
except ConfigurationError as error:
    sys.exit(f"entrypoint: MONGO_URI is not a MongoDB URI: {error}")
if not parsed["database"]:
    sys.exit("entrypoint: MONGO_URI must name a database, e.g. mongodb://mongo:27017/chatsys")
# Only hosts are printed: the URI may carry a password.
hosts = ",".join(f"{host}:{port}" for host, port in parsed["nodelist"]) or "(from DNS SRV)"
wait_seconds = float(os.environ["DB_WAIT_SECONDS"])
deadline = time.monotonic() + wait_seconds
while True:
    try:
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000) as client:
            client.admin.command("ping")
        print(f"entrypoint: the database at {hosts} answers", flush=True)
        break
    except OperationFailure as error:  # it answered and refused (credentials): waiting will not help
        reason = (error.details or {}).get("errmsg") or error
        sys.exit(f"entrypoint: the database at {hosts} refused the ping: {reason}")
    except PyMongoError as error:
        if time.monotonic() >= deadline:
            sys.exit(f"entrypoint: no answer from the database at {hosts} within {wait_seconds:g} s"
                     f" ({type(error).__name__})")
        print(f"entrypoint: waiting for the database at {hosts} ({type(error).__name__})", flush=True)
        time.sleep(1)
PY

# Replicas of one service share PORT (HAProxy reaches them all there), so they would all
# answer X-Instance chat@4000. With INSTANCE_PORT_FROM_ADDRESS=on, each also listens on PORT
# plus the low ten bits of its own address, unique on its network, and names itself by that
# port: X-Instance chat@4005 is the container at x.x.x.5, and answers on 4005 too.
if [[ ${INSTANCE_PORT_FROM_ADDRESS:-off} == on ]]; then
    instance_port=$(python -c 'import ipaddress, os, socket
address = ipaddress.ip_address(socket.gethostbyname(socket.gethostname()))
print(int(os.environ["PORT"]) + (int(address) & 0x3ff))')
    bind_host=${SERVICE_HOST:-0.0.0.0}
    # gunicorn reads GUNICORN_CMD_ARGS after its config file: both ports are bound.
    export GUNICORN_CMD_ARGS="--bind $bind_host:$PORT --bind $bind_host:$instance_port${GUNICORN_CMD_ARGS:+ $GUNICORN_CMD_ARGS}"
    export PORT=$instance_port
    echo "entrypoint: also listening on $PORT, the name of this replica in X-Instance"
fi

# Prometheus finds the containers of a service by address (compose.prometheus.yaml) and has
# no name for them, so each names itself in its metrics (METRICS_SERVER, the `server` label):
# compose's name for the container, chat-2 for <project>-chat-2, as Docker's DNS answers for
# its address. /etc/hosts names it by its id, so the DNS server is asked directly.
if [[ ${METRICS_SERVER_FROM_DNS:-off} == on && -z ${METRICS_SERVER:-} ]]; then
    if METRICS_SERVER=$(python -c 'import re, socket, dns.resolver, dns.reversename
address = socket.gethostbyname(socket.gethostname())
name = dns.resolver.resolve(dns.reversename.from_address(address), "PTR", lifetime=5)[0].target.labels[0].decode()
print("-".join(re.fullmatch(r".*?([A-Za-z][A-Za-z0-9]*)[-_]([0-9]+)", name).groups()))' 2>/dev/null); then
        export METRICS_SERVER
        echo "entrypoint: metrics labelled server=$METRICS_SERVER"
    else
        echo "entrypoint: no DNS name for this container; its metrics carry Prometheus's label only" >&2
    fi
fi

exec "$@" 2>&1
