"""Constants with one home: the default ports (service_kit/config.py; scripts/lib/common.sh for the
shell) and the problem-type base (service_kit/problems.py). Every other file that must name
one names the same. No process is started, so these belong to the fast layer."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from service_kit.config import DEFAULT_PORTS, PUBLIC_PORTS
from tests.lib import harness

pytestmark = pytest.mark.fast

ROOT = harness.ROOT
SERVICE = {"chat": DEFAULT_PORTS["chat"], "login": DEFAULT_PORTS["login"], "profile": DEFAULT_PORTS["profile"]}


def lib_sh_defaults() -> dict[str, str]:
    names = [
        "LOGIN_PORT",
        "PROFILE_PORT",
        "HAPROXY_PORT",
        "LOGIN_SERVICE_PORT",
        "PROFILE_SERVICE_PORT",
        "CHAT_PORTS",
        "MAX_CHAT_SERVERS",
    ]
    script = f'source "{ROOT}/scripts/lib/common.sh"; ' + "; ".join(f'echo "{name}=${{{name}}}"' for name in names)
    output = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"}, check=True
    ).stdout
    return dict(line.split("=", 1) for line in output.splitlines())


def test_the_scripts_use_the_same_ports():
    defaults = lib_sh_defaults()
    assert int(defaults["HAPROXY_PORT"]) == PUBLIC_PORTS["chat"]
    assert int(defaults["LOGIN_PORT"]) == PUBLIC_PORTS["login"]
    assert int(defaults["PROFILE_PORT"]) == PUBLIC_PORTS["profile"]
    assert int(defaults["LOGIN_SERVICE_PORT"]) == SERVICE["login"]
    assert int(defaults["PROFILE_SERVICE_PORT"]) == SERVICE["profile"]
    assert int(defaults["CHAT_PORTS"].split()[0]) == SERVICE["chat"]


def test_haproxy_defaults_are_the_same_ports():
    config = (ROOT / "conf/haproxy/haproxy.cfg").read_text()
    defaults = dict(re.findall(r"\$\{(\w+)-([^}]+)\}", config))
    assert int(defaults["HAPROXY_PORT"]) == PUBLIC_PORTS["chat"]
    assert int(defaults["HAPROXY_LOGIN_PORT"]) == PUBLIC_PORTS["login"]
    assert int(defaults["HAPROXY_PROFILE_PORT"]) == PUBLIC_PORTS["profile"]
    local = dict(re.findall(r'server (login|profile) "\$\{\w+-127\.0\.0\.1:(\d+)\}"', config))
    assert {name: int(port) for name, port in local.items()} == {
        "login": SERVICE["login"],
        "profile": SERVICE["profile"],
    }
    assert int(defaults["CHAT_SERVER_1"].rsplit(":", 1)[1]) == SERVICE["chat"]


def test_haproxy_has_a_line_for_every_chat_server_start_sh_may_start():
    config = (ROOT / "conf/haproxy/haproxy.cfg").read_text()
    most = int(lib_sh_defaults()["MAX_CHAT_SERVERS"])
    for backend in ("chat_servers", "chat_waits"):
        section = config.split(f"\nbackend {backend}\n", 1)[1].split("\nbackend ", 1)[0]
        lines = re.findall(r'^    server (chat\d+) "\$\{(CHAT_SERVER_\d+)', section, re.M)
        assert lines == [(f"chat{number}", f"CHAT_SERVER_{number}") for number in range(1, most + 1)], backend


def test_systemd_units_and_settings_use_the_same_ports():
    for service in ("login", "profile"):
        unit = (ROOT / f"conf/systemd/{service}.service").read_text()
        assert f"Environment=PORT={SERVICE[service]}\n" in unit
    settings = dict(re.findall(r"^(\w+)=(.*)$", (ROOT / "conf/systemd/chatsys.env").read_text(), re.M))
    assert settings["LOGIN_URL"] == f"http://127.0.0.1:{SERVICE['login']}"
    assert settings["LOGIN_SERVER"] == f"127.0.0.1:{SERVICE['login']}"
    assert settings["PROFILE_SERVER"] == f"127.0.0.1:{SERVICE['profile']}"
    assert int(settings["HAPROXY_PORT"]) == PUBLIC_PORTS["chat"]
    assert int(settings["HAPROXY_LOGIN_PORT"]) == PUBLIC_PORTS["login"]
    assert int(settings["HAPROXY_PROFILE_PORT"]) == PUBLIC_PORTS["profile"]


def test_compose_publishes_the_public_ports():
    haproxy = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["haproxy"]
    targets = {int(spec.rsplit(":", 1)[1]) for spec in haproxy["ports"]}
    assert set(PUBLIC_PORTS.values()) <= targets


def test_the_load_test_plan_defaults_to_the_public_ports():
    plan = (ROOT / "jmeter/chat_load.jmx").read_text()
    assert f"${{__P(chat_port,{PUBLIC_PORTS['chat']})}}" in plan
    assert f"${{__P(login_port,{PUBLIC_PORTS['login']})}}" in plan


def test_haproxy_problems_use_the_services_problem_type_base():
    """HAProxy's own problem+json bodies cannot import it; they must still name the same base."""
    from service_kit.problems import PROBLEM_TYPE_BASE

    types = re.findall(r'"type":"([^"]+)"', (ROOT / "conf/haproxy/haproxy.cfg").read_text())
    assert types and all(kind.startswith(PROBLEM_TYPE_BASE) for kind in types), types
