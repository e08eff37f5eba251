"""gunicorn's settings file (conf/gunicorn.conf.py) reads its values through
service_kit/config.py: the service from the app gunicorn is given, the defaults per
service, and for a bad value one line that names the variable and what it accepts, no
traceback. Starts no service: gunicorn stops while it reads its settings."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from service_kit import gunicorn_metrics

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
CONF = "conf/gunicorn.conf.py"

pytestmark = pytest.mark.fast


def gunicorn_stops(app: str, **env: str) -> subprocess.CompletedProcess:
    """gunicorn run as the scripts, units and images run it, with `env` on top of ours; it
    must stop before loading the app, whose database is not there."""
    return subprocess.run(
        [str(GUNICORN), "-c", CONF, "--check-config", app],
        cwd=ROOT,
        env={**os.environ, "MONGO_URI": "mongodb://127.0.0.1:9/none", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "variable, value, accepted",
    [
        ("GUNICORN_WORKERS", "two", "an integer of 1 or more"),
        ("GUNICORN_WORKERS", "0", "an integer of 1 or more"),
        ("PORT", "41o1", "an integer from 1 to 65535"),
        ("GUNICORN_TIMEOUT", "3.5", "an integer of 0 or more"),
        ("GUNICORN_WORKER_CLASS", "eventlet", "one of gevent, gthread, sync"),
        ("LOG_LEVEL", "loud", "one of debug, info, warning, error, critical"),
        ("SCRYPT_N", "lots", "an integer"),  # a service's setting stops the master too
    ],
)
def test_a_bad_value_stops_gunicorn_with_one_line_naming_the_variable_and_what_it_accepts(variable, value, accepted):
    stopped = gunicorn_stops("login_service.wsgi:app", **{variable: value})
    assert stopped.returncode != 0
    assert stopped.stderr.strip() == f"environment variable {variable} must be {accepted}, got {value!r}"


def test_an_app_that_is_not_a_service_stops_gunicorn_with_one_line_naming_the_services():
    stopped = gunicorn_stops("login_service.api:blueprint")
    assert stopped.returncode != 0
    assert stopped.stderr.strip() == (
        "gunicorn must be given one of chat_service.wsgi:app, login_service.wsgi:app, profile_service.wsgi:app"
        " as its app, got 'login_service.api:blueprint'"
    )


def settings_for(monkeypatch, app: str, **env: str) -> dict:
    """The settings conf/gunicorn.conf.py gives gunicorn for `app`, read in-process."""
    for name in ("PORT", "GUNICORN_WORKER_CLASS", "METRICS_PORT", "METRICS_PORT_OFFSET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["gunicorn", "-c", CONF, app])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the file puts the checkout first
    return runpy.run_path(str(ROOT / CONF))


def test_each_service_gets_its_port_and_worker_class_and_the_metrics_port_follows(monkeypatch):
    chat = settings_for(monkeypatch, "chat_service.wsgi:app", METRICS_PORT_OFFSET="5000")
    assert (chat["bind"], chat["worker_class"], chat["metrics_port"]) == (["127.0.0.1:4000"], "gevent", 9000)
    login = settings_for(monkeypatch, "login_service.wsgi:app", GUNICORN_WORKERS="3", LOG_LEVEL="WARNING")
    assert (login["bind"], login["worker_class"], login["workers"], login["loglevel"]) == (
        ["127.0.0.1:4101"],
        "service_kit.gthread_worker.ThreadWorker",  # gunicorn's gthread (see that module)
        3,
        "warning",
    )


def test_a_metrics_server_name_labels_every_sample_the_master_serves(monkeypatch):
    chat = settings_for(monkeypatch, "chat_service.wsgi:app", METRICS_SERVER="chat-2")
    assert chat["metrics_server"] == "chat-2"
    requests_seen = Counter("chatsys_example_total", "An example.", ["route"], registry=None)
    requests_seen.labels("/health").inc()
    registry = CollectorRegistry()
    registry.register(gunicorn_metrics.WithServer(requests_seen, "chat-2"))
    served = generate_latest(registry).decode()
    assert 'chatsys_example_total{route="/health",server="chat-2"} 1.0' in served
