"""Gunicorn settings shared by every service, read from the environment.

Used the same way by the scripts, the systemd units and the containers:
    gunicorn -c conf/gunicorn.conf.py chat_service.wsgi:app
"""

import os
import signal
import socket
import struct
import sys

# The checkout, whatever the working directory: service_kit and the services import from it.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gunicorn.config import Config  # noqa: E402

from service_kit import gunicorn_metrics  # noqa: E402  (after the path; no Flask, no pymongo)
from service_kit.config import ServerSettings, Settings, service_of_app  # noqa: E402  (imports nothing else)

# The service is the one whose app gunicorn was given (APP_MODULE, read by gunicorn's own
# parser); anything else stops here with one line.
_app_modules = Config().parser().parse_args().args
_service = service_of_app(_app_modules[0] if len(_app_modules) == 1 else None)
# Every value in one reader (service_kit/config.py): a bad one stops gunicorn here, with
# one line naming the variable and what it accepts, before any worker starts. The
# service's own settings are read too, so that a bad one stops the master the same way
# instead of every worker failing in turn.
_settings = ServerSettings.from_env(_service)
Settings.from_env(_service)

port = _settings.port
# Loopback by default: clients reach the services through HAProxy. In a container, 0.0.0.0
# (the Dockerfile sets it): the compose network is the container's only way in.
bind = [f"{_settings.host}:{port}"]

# Chat: gevent, one greenlet per connection. Its requests only wait on the database and
# the login service, and a greenlet costs less per request than gthread's thread pool and
# poller hand-offs (docs/benchmarks.md). Login and profile: gthread, a few processes with
# threads and HTTP keep-alive; login hashes passwords with scrypt, which would stall every
# greenlet of its worker.
# gthread is gunicorn's, but for the close of a stalled client's connection (see
# service_kit/gthread_worker.py).
worker_class = (
    "service_kit.gthread_worker.ThreadWorker" if _settings.worker_class == "gthread" else _settings.worker_class
)
workers = _settings.workers
threads = _settings.threads
worker_connections = _settings.worker_connections
# Idle keep-alive connections stay open longer than HAProxy keeps idle server connections
# (see conf/haproxy/haproxy.cfg), so HAProxy, not gunicorn, closes them.
keepalive = _settings.keepalive
timeout = _settings.timeout
graceful_timeout = 10
backlog = _settings.backlog
# Worker heartbeats on tmpfs: a slow or overlay disk must not make the master kill workers.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# Never preload: each worker must build its own MongoClient after the fork.
preload_app = False

# Reject oversized request lines and headers before they reach Flask (431/400).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

accesslog = _settings.access_log
errorlog = "-"
# The app's own log lines and tracebacks (stderr) go where gunicorn's go: the journal under
# systemd, stdout in a container, the --error-logfile scripts/start.sh names. All of them
# JSON lines (service_kit/logs.py); the app writes one per request (ACCESS_LOG, on).
capture_output = True
loglevel = _settings.log_level
logger_class = "service_kit.logs.JsonLogger"
# A log file (--error-logfile) is rotated by the master past LOG_MAX_BYTES, LOG_KEEP old ones.
log_max_bytes = _settings.log_max_bytes
log_keep = _settings.log_keep

# Prometheus metrics (service_kit/metrics.py, on unless METRICS=off): every worker writes
# its values to a folder of this gunicorn's own, and the master serves their sum on
# METRICS_HOST:METRICS_PORT (loopback; never a port HAProxy forwards) when a port is given,
# or at port + METRICS_PORT_OFFSET (scripts/start.sh and systemd's chatsys.env: 5000).
metrics_enabled = _settings.metrics_enabled
metrics_host = _settings.metrics_host
metrics_port = _settings.metrics_port
metrics_server = _settings.metrics_server
proc_name = f"chatsys-{port}"

# A client that stalls while sending a request (slowloris) holds a worker thread; every
# read of a request gives up after this many seconds, and the connection is closed.
# Accepted sockets inherit SO_RCVTIMEO from the listening socket. (A gevent worker reads
# without blocking, so this does not apply there: a stalled client holds one greenlet of
# worker_connections, and the chat servers listen behind HAProxy, which cuts it.)
request_read_timeout = _settings.read_timeout

# Several gunicorns run side by side on one host; the per-user control socket would clash.
control_socket_disable = True


def on_starting(server):
    if metrics_enabled:
        gunicorn_metrics.prepare_directory(port)


def when_ready(server):
    if metrics_enabled and metrics_port:
        gunicorn_metrics.serve(server, metrics_host, metrics_port, metrics_server)
    if server.cfg.errorlog not in (None, "-") and log_max_bytes > 0:
        from service_kit import logs

        logs.rotate_when_large(server.cfg.errorlog, log_max_bytes, log_keep)


def child_exit(server, worker):
    if metrics_enabled:
        gunicorn_metrics.worker_exited(worker.pid)


def on_exit(server):
    if metrics_enabled:
        gunicorn_metrics.remove_directory()


def post_worker_init(worker):
    if _settings.worker_class == "gthread":
        for listener in worker.sockets:
            listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", request_read_timeout, 0))
    # Gunicorn's own error answers (414, 431, 400 for malformed requests) in problem+json
    # too. Imported here, in the worker: a gevent worker patches the standard library
    # first, and pymongo must be imported after that.
    from service_kit import gunicorn_errors

    gunicorn_errors.install(f"{_service}@{port}")
    if _service == "chat":
        _end_waits_on_stop()


def _end_waits_on_stop():
    """On SIGTERM a chat worker ends its long polls at once with empty pages, before
    gunicorn's graceful stop, instead of holding them until graceful_timeout cuts them."""
    from chat_service import live

    stop = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        live.stop_waiting()
        if callable(stop):
            stop(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
