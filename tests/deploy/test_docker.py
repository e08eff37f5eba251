"""Docker packaging, on a real engine: the images built from the Dockerfile and the whole
compose stack run and exercised through its published loopback ports (healthy, the contract,
distinct chat replicas, scaling, a killed chat container, the database restarted, data kept
over `down` and `up`, no root, nothing on an outside address), then a swarm deploy of the
same file (healthy, the contract through HAProxy, chat replicas found through DNS). The files
are also checked as written, for what a run cannot show.

The engine is the one that answers, else a private dockerd (scripts/docker-engine.sh) that
is stopped again at the end; its images stay in the user cache, so a second run builds
nothing. The swarm runs on a private dockerd of its own beside it, so the first engine never
enters swarm mode. The images are the local stand-ins (scripts/docker-local-images.sh): this machine
can pull nothing, and the database container is the embedded default, FerretDB.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from tests.lib import docker_stack, harness
from tests.lib import swarm as swarm_lib
from tests.lib.accounts import register_and_login, unique_name
from tests.lib.contract import assert_contract_suites_pass, assert_problem
from tests.lib.rooms import read_room
from tests.lib.swarm import MIGRATION, SERVICES_AND_DATABASE, instances_answering
from tools.loadtest import search, timeline

ROOT = harness.ROOT
COMPOSE_FILE = ROOT / "compose.yaml"
PROMETHEUS_COMPOSE_FILE = ROOT / "compose.prometheus.yaml"
DOCKERFILE = ROOT / "Dockerfile"
HAPROXY_CONFIG = "conf/haproxy/haproxy.cfg"
# Where the official haproxy image's default command reads its configuration.
HAPROXY_IMAGE_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"
CONTRACT_PORTS = {"login": 4100, "profile": 4200, "chat": 4000}
SERVICES = ("login", "profile", "chat")


# --- reading the files ----------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        text = self.arguments.strip()
        return json.loads(text) if text.startswith("[") else shlex.split(text)


class Dockerfile:
    def __init__(self, path: Path):
        self.instructions: list[Instruction] = []
        pending = ""
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith("#") or (not stripped and not pending):
                continue
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            keyword, _, arguments = (pending + stripped).partition(" ")
            self.instructions.append(Instruction(keyword.upper(), arguments.strip()))
            pending = ""

    def all(self, keyword: str) -> list[Instruction]:
        return [instruction for instruction in self.instructions if instruction.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"the Dockerfile has no {keyword}"
        return found[-1]

    def index(self, keyword: str, predicate=lambda arguments: True) -> int:
        for position, instruction in enumerate(self.instructions):
            if instruction.keyword == keyword and predicate(instruction.arguments):
                return position
        raise AssertionError(f"the Dockerfile has no matching {keyword}")

    def env(self) -> dict[str, str]:
        values = {}
        for instruction in self.all("ENV"):
            for pair in shlex.split(instruction.arguments):
                name, _, value = pair.partition("=")
                values[name] = value
        return values

    def healthcheck_command(self) -> str:
        """The HEALTHCHECK's command as the shell-form string Docker runs with /bin/sh -c."""
        words = self.last("HEALTHCHECK").arguments.split(" CMD ", 1)
        assert len(words) == 2, "HEALTHCHECK has no CMD"
        command = words[1].strip()
        return shlex.join(json.loads(command)) if command.startswith("[") else command


def clean_compose_environment() -> dict[str, str]:
    """No chatsys setting and no COMPOSE_* variable from the caller's shell."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}


def resolved_compose(tmp_path_factory, *files: Path) -> dict:
    """The compose files as compose resolves them with no .env file and no settings in the environment."""
    docker_compose = harness.require_tool("docker-compose")
    empty_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env_file.write_text("")
    file_arguments = [word for path in files for word in ("-f", str(path))]
    result = subprocess.run(
        [docker_compose, *file_arguments, "--env-file", str(empty_env_file), "config"],
        cwd=ROOT,
        env=clean_compose_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    return resolved_compose(tmp_path_factory, COMPOSE_FILE)


@pytest.fixture(scope="module")
def compose_with_prometheus(tmp_path_factory) -> dict:
    """compose.yaml with compose.prometheus.yaml, as scripts/docker-stack.sh runs them by default."""
    return resolved_compose(tmp_path_factory, COMPOSE_FILE, PROMETHEUS_COMPOSE_FILE)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile(DOCKERFILE)


def environment_of(spec: dict) -> dict[str, str]:
    environment = spec.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {name: "" if value is None else str(value) for name, value in environment.items()}


def published_ports(spec: dict) -> set[tuple[int, int]]:
    """(published, target) pairs, from the short or the long port syntax."""
    return {(published, target) for _, published, target in published_addresses(spec)}


def published_addresses(spec: dict) -> set[tuple[str, int, int]]:
    """(host address, published, target) of each published port; "" for every address."""
    found = set()
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            found.add((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:
            parts = str(port).split(":")
            assert len(parts) >= 2, f"port {port} is published on a random host port"
            found.add((parts[-3] if len(parts) > 2 else "", int(parts[-2]), int(parts[-1].split("/")[0])))
    return found


def builds_our_image(spec: dict) -> bool:
    build = spec.get("build")
    if build is None:
        return False
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile_name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    return (ROOT / context).resolve() / dockerfile_name == DOCKERFILE


def mounts_of(spec: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume, short or long syntax."""
    mounts = []
    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
        else:
            source, target, *options = volume.split(":")
            mounts.append((source, target, "ro" in ",".join(options).split(",")))
    return mounts


# --- the files hold to the rules --------------------------------------------------------------


def test_compose_file_is_valid_without_an_env_file(compose):
    # The fixture ran `docker-compose config` with no .env file and asserted it passed.
    assert set(compose["services"]) >= {"mongo", "migrate", "login", "profile", "chat", "haproxy"}


def test_each_service_and_the_database_run_in_their_own_containers(compose):
    services = compose["services"]
    assert set(services) == {"mongo", MIGRATION, "login", "profile", "chat", "haproxy"}
    # The migration runs once per `up`, from the services' image, and exits.
    assert builds_our_image(services[MIGRATION]) and services[MIGRATION]["image"] == services["login"]["image"]
    assert services[MIGRATION]["entrypoint"] == ["python", "-m", "service_kit.migrate"]
    assert services[MIGRATION]["restart"] == "no"
    assert services["mongo"]["image"].startswith("mongo:")
    assert services["haproxy"]["image"].startswith("haproxy:")
    for name in SERVICES:
        assert builds_our_image(services[name]), f"{name} is not built from the Dockerfile"
        module = f"{name}_service.wsgi:app"
        assert services[name]["command"] == ["gunicorn", "-c", "conf/gunicorn.conf.py", module], (
            f"{name} must start like outside Docker (tests/lib/harness.py gunicorn_argv)"
        )
    images = {services[name]["image"] for name in SERVICES}
    assert len(images) == 1, "login, profile and chat share one image"


def test_service_image_is_slim_python_by_default_with_dependencies_in_a_cached_layer(dockerfile):
    assert dockerfile.all("FROM")[0].arguments.split()[0] == "${PYTHON_IMAGE}"
    base_argument = [
        instruction for instruction in dockerfile.all("ARG") if instruction.arguments.startswith("PYTHON_IMAGE=")
    ]
    assert base_argument and base_argument[0].arguments == "PYTHON_IMAGE=python:3.11-slim", (
        "users build on the official image unless they say otherwise"
    )
    copy_requirements = dockerfile.index("COPY", lambda arguments: arguments.split()[0] == "requirements.lock")
    install = dockerfile.index("RUN", lambda arguments: "pip install --require-hashes -r" in arguments)
    first_code_copy = dockerfile.index("COPY", lambda arguments: "_service" in arguments or "service_kit" in arguments)
    assert copy_requirements < install < first_code_copy, (
        "requirements.lock must be copied and installed before the code, so code changes reuse that layer"
    )
    pinned = [
        line
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line.strip() and not line.startswith((" ", "#"))
    ]
    assert pinned and all("==" in line and line.endswith("\\") for line in pinned), (
        "every dependency is pinned, with its hashes on the lines that follow"
    )


def test_service_image_runs_as_a_non_root_user(dockerfile):
    user = dockerfile.last("USER").arguments.split(":")[0]
    assert user not in ("root", "0")
    assert dockerfile.index("USER") > dockerfile.index("RUN", lambda arguments: "useradd" in arguments)


def test_service_image_listens_beyond_loopback_and_starts_through_the_entry_script(dockerfile):
    assert dockerfile.env().get("SERVICE_HOST") == "0.0.0.0"
    entrypoint = dockerfile.last("ENTRYPOINT").exec_form()
    workdir = dockerfile.last("WORKDIR").arguments
    script = ROOT / Path(entrypoint[0]).relative_to(workdir)
    assert script == ROOT / "docker" / "entrypoint.sh"
    assert os.access(script, os.X_OK), "the entry script must be executable (its mode is copied)"
    text = script.read_text()
    assert "set -euo pipefail" in text
    assert re.search(r'^exec "\$@"', text, re.MULTILINE), "gunicorn must replace the script (signals reach it)"
    assert dockerfile.last("CMD").exec_form()[:3] == ["gunicorn", "-c", "conf/gunicorn.conf.py"]


def test_image_copies_files_that_exist_and_are_not_ignored(dockerfile):
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for instruction in dockerfile.all("COPY"):
        *sources, _ = [word for word in instruction.arguments.split() if not word.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert Path(source).parts[0].rstrip("/") not in ignored, f"COPY {source} is excluded by .dockerignore"


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_build():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "var", "results", ".env", ".pytest_cache", "**/__pycache__"} <= ignored


def test_every_container_has_a_healthcheck(compose, dockerfile):
    image_healthcheck = dockerfile.healthcheck_command()
    assert "urllib" in image_healthcheck and "/health" in image_healthcheck
    for name, spec in compose["services"].items():
        if name == MIGRATION:
            continue  # a one-shot: done when it exits 0, which the services wait for
        healthcheck = spec.get("healthcheck") or {}
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"
        assert healthcheck.get("test") or builds_our_image(spec), f"{name} has no healthcheck"
    mongo_check = compose["services"]["mongo"]["healthcheck"]["test"]
    assert "mongosh" in mongo_check and "db.adminCommand('ping')" in mongo_check


def test_containers_start_only_after_their_dependencies_are_healthy(compose):
    services = compose["services"]
    expected = {
        MIGRATION: {"mongo"},
        "login": {"mongo", MIGRATION},
        "profile": {"mongo", MIGRATION, "login"},
        "chat": {"mongo", MIGRATION, "login"},
        "haproxy": {"chat", "login", "profile"},
    }
    for name, needs in expected.items():
        depends_on = services[name].get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        assert set(depends_on) == needs, name
        for dependency, condition in depends_on.items():
            wanted = "service_completed_successfully" if dependency == MIGRATION else "service_healthy"
            assert condition.get("condition") == wanted, f"{name} waits for {dependency} only to start"


def test_published_ports_match_the_contract(compose):
    services = compose["services"]
    # HAProxy publishes every public port; no service faces a client directly.
    assert published_ports(services["haproxy"]) == {(5000, 5000), (4100, 4100), (4200, 4200), (8404, 8404)}
    for name in ("login", "profile", "chat"):
        assert published_ports(services[name]) == set(), f"{name} is reached through HAProxy only"
    assert published_ports(services["mongo"]) == set()
    for name in SERVICES:
        assert environment_of(services[name])["PORT"] == str(CONTRACT_PORTS[name])
    addresses = {address for spec in services.values() for address, _, _ in published_addresses(spec)}
    assert addresses == {"127.0.0.1"}, "published ports bind loopback unless PUBLISHED_ADDRESS says otherwise"


def test_chat_tier_is_one_scaled_service_haproxy_finds_through_dns(compose):
    services = compose["services"]
    chat, haproxy = services["chat"], services["haproxy"]
    assert chat["deploy"]["replicas"] == 3
    assert "container_name" not in chat, "a fixed container name would forbid --scale"
    assert not [name for name in services if name.startswith("chat") and name != "chat"]
    environment = environment_of(haproxy)
    assert environment["CHAT_DNS_NAME"] == "chat"
    assert environment["CHAT_DNS_PORT"] == environment_of(chat)["PORT"]
    assert environment["HAPROXY_BIND"] == environment["HAPROXY_STATS_BIND"] == "0.0.0.0"
    targets = {target for _, target in published_ports(haproxy)}
    assert targets == {
        int(environment[name])
        for name in ("HAPROXY_PORT", "HAPROXY_LOGIN_PORT", "HAPROXY_PROFILE_PORT", "HAPROXY_STATS_PORT")
    }
    assert environment["LOGIN_SERVER"] == f"login:{CONTRACT_PORTS['login']}"
    assert environment["PROFILE_SERVER"] == f"profile:{CONTRACT_PORTS['profile']}"
    assert environment["HAPROXY_RUNTIME_SOCKET"].startswith(("/tmp/", "/var/lib/haproxy/")), (
        "the official image runs as user haproxy, who can write only there"
    )
    assert "LOGIN_URL" in environment_of(chat) and "LOGIN_URL" in environment_of(services["profile"])


def test_haproxy_mounts_the_shared_config_its_loader_and_the_web_client_read_only(compose):
    mounts = {
        (ROOT / source).resolve(): (target, read_only)
        for source, target, read_only in mounts_of(compose["services"]["haproxy"])
    }
    assert mounts == {
        ROOT / HAPROXY_CONFIG: (HAPROXY_IMAGE_CONFIG, True),
        # the web client's loader, which the config loads from beside itself
        ROOT / "conf/haproxy/web.lua": ("/usr/local/etc/haproxy/web.lua", True),
        # the config's default HAPROXY_WEB_ROOT: ../../web from its own folder
        ROOT / "web": ("/usr/local/web", True),
    }


def test_prometheus_is_published_on_loopback_only_and_the_metrics_ports_nowhere(compose_with_prometheus):
    services = compose_with_prometheus["services"]
    assert published_addresses(services["prometheus"]) == {("127.0.0.1", 9090, 9090)}
    assert published_ports(services["node-exporter"]) == set()
    for name in SERVICES:
        environment = environment_of(services[name])
        assert environment["METRICS_PORT"] == "9000", f"{name} serves its metrics for Prometheus"
        assert environment["METRICS_SERVER_FROM_DNS"] == "on", f"{name} names itself in its metrics"
        assert published_ports(services[name]) == set(), f"{name} publishes nothing, its metrics neither"
    # The overlay adds to compose.yaml's services; it changes none of their other settings.
    assert environment_of(services["haproxy"])["HAPROXY_STATS_PASSWORD"] == ""
    for spec in services.values():
        assert spec.get("healthcheck", {}).get("test") or builds_our_image(spec)


def test_env_example_lists_every_compose_setting():
    used = {
        name
        for path in (COMPOSE_FILE, PROMETHEUS_COMPOSE_FILE)
        for name in re.findall(r"(?<!\$)\$\{(\w+)", path.read_text())
    }
    listed = set(re.findall(r"^#?\s*(\w+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert used, "compose.yaml reads no setting"
    assert used <= listed, f".env.example does not mention {sorted(used - listed)}"


def test_swarm_stack_file_is_accepted_by_docker_stack(tmp_path):
    docker = harness.require_tool("docker")
    script = str(ROOT / "docker" / "swarm-stack.sh")
    # Swarm publishes on every address of the node: the stats page must ask for a password.
    refused = subprocess.run([script], env=clean_compose_environment(), capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "HAPROXY_STATS_PASSWORD" in refused.stderr
    environment = {**clean_compose_environment(), "DOCKER_CONFIG": str(tmp_path), "HAPROXY_STATS_PASSWORD": "secret"}
    stack = subprocess.run([script], env=environment, capture_output=True, text=True, timeout=30)
    assert stack.returncode == 0, stack.stderr
    # `docker stack config` is the loader of `docker stack deploy`; it needs no engine.
    result = subprocess.run(
        [docker, "stack", "config", "-c", "-"],
        input=stack.stdout,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["chat"]["deploy"]["replicas"] == 3
    # No virtual IPs (they need IPVS), and so no routing mesh: every port in host mode.
    assert {name: spec["deploy"]["endpoint_mode"] for name, spec in services.items()} == dict.fromkeys(
        (*SERVICES_AND_DATABASE, MIGRATION), "dnsrr"
    )
    # Swarm has no start order: the migration is a job, run once to completion, retried on failure.
    assert services[MIGRATION]["deploy"]["mode"] == "replicated-job"
    assert services[MIGRATION]["deploy"]["restart_policy"] == {"condition": "on-failure"}
    assert all("mode" not in spec["deploy"] for name, spec in services.items() if name != MIGRATION)
    ports = services["haproxy"]["ports"]
    assert {(port["published"], port["target"], port["mode"]) for port in ports} == {
        (5000, 5000, "host"),
        (4100, 4100, "host"),
        (4200, 4200, "host"),
        (8404, 8404, "host"),
    }
    assert all("ports" not in spec for name, spec in services.items() if name != "haproxy")
    assert services["haproxy"]["depends_on"] == ["chat", "login", "profile"]


def haproxy_binary() -> str:
    return harness.require_tool("haproxy", "/usr/sbin/haproxy")


def test_haproxy_config_is_valid_with_the_compose_environment(compose):
    environment = {"PATH": os.environ.get("PATH", ""), **environment_of(compose["services"]["haproxy"])}
    result = subprocess.run(
        [haproxy_binary(), "-c", "-f", HAPROXY_CONFIG],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the containers' command lines, run on this machine ------------------------------------------


# --- the stack on a real engine ----------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    engine = docker_stack.start_engine()
    yield engine
    docker_stack.stop_engine(engine)


@pytest.fixture(scope="module")
def stack(engine, tmp_path_factory):
    stack = docker_stack.new_stack(engine, tmp_path_factory.mktemp("docker-var"))
    try:
        stack.up()
        yield stack
    finally:
        stack.script("down", "--volumes", "--keep-engine", check=False, timeout=300)


CONTAINERS = 9  # mongo, login, profile, three chat servers, haproxy, prometheus, node-exporter


@pytest.mark.local
def test_every_container_is_healthy_when_up_returns(stack):
    health = stack.health()
    assert len(health) == CONTAINERS, health
    assert set(health.values()) == {"healthy"}, health
    assert stack.migration_exit_codes() == [0], "the migration ran once, and succeeded, before the services"
    assert {container["Config"]["Labels"]["com.docker.compose.service"] for container in stack.containers()} == {
        "mongo",
        "login",
        "profile",
        "chat",
        "haproxy",
        "prometheus",
        "node-exporter",
    }
    assert stack.chat_url in stack.up_output and stack.login_url in stack.up_output, "up prints the URLs"
    assert stack.prometheus_url in stack.up_output


def prometheus_targets(stack) -> list[dict]:
    answer = requests.get(f"{stack.prometheus_url}/api/v1/targets", params={"state": "active"}, timeout=10)
    answer.raise_for_status()
    return answer.json()["data"]["activeTargets"]


def prometheus_query(stack, query: str) -> list[dict]:
    answer = requests.get(f"{stack.prometheus_url}/api/v1/query", params={"query": query}, timeout=10)
    answer.raise_for_status()
    return answer.json()["data"]["result"]


@pytest.mark.local
def test_prometheus_scrapes_haproxy_every_service_container_ferretdb_and_the_node(stack):
    # Targets by job: HAProxy's exporter, login, profile and each of the three chat
    # containers (found through DNS), FerretDB's debug listener, the node exporter, itself.
    wanted = Counter({"haproxy": 1, "services": 5, "ferretdb": 1, "node": 1, "prometheus": 1})

    def every_target_up() -> bool:
        targets = prometheus_targets(stack)
        return Counter(target["labels"]["job"] for target in targets) == wanted and all(
            target["health"] == "up" for target in targets
        )

    try:
        harness.wait_until(every_target_up, 120, "Prometheus to see every target up", interval=1)
    except TimeoutError:
        found = [(t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"]) for t in prometheus_targets(stack)]
        raise AssertionError(f"Prometheus's targets: {found}") from None
    services = {
        target["labels"]["service"] for target in prometheus_targets(stack) if target["labels"]["job"] == "services"
    }
    assert services == {"login", "profile", "chat"}
    # The recording rules give a figure per server (the healthchecks are requests too).
    harness.wait_until(
        lambda: len(prometheus_query(stack, "server:chatsys_requests:rate1m")) == 5,
        60,
        "the per-server request rate of five servers",
        interval=1,
    )
    # Each container names itself in its series: compose's name for it, not its address.
    servers = {series["metric"]["server"] for series in prometheus_query(stack, "server:chatsys_requests:rate1m")}
    assert servers == {"login-1", "profile-1", "chat-1", "chat-2", "chat-3"}


@pytest.mark.local
def test_the_timeline_from_the_compose_prometheus_names_each_chat_container(stack, tmp_path):
    """What `scale_test.sh --docker` records at its end (tools/loadtest/timeline.py, as for the
    local stack): each chat container's requests and CPU, its line named as compose names
    the container, and the database's CPU."""
    user = register_and_login(stack.login_url)
    room = unique_name("r")
    created = requests.post(f"{stack.chat_url}/rooms", json={"name": room}, headers=user.auth, timeout=10)
    assert created.status_code == 201, created.text
    chats = {
        f"chat-{container['Config']['Labels']['com.docker.compose.container-number']}"
        for container in stack.containers()
        if container["Config"]["Labels"]["com.docker.compose.service"] == "chat"
    }

    def reads(count: int) -> None:
        with requests.Session() as session:
            for _ in range(count):  # HAProxy spreads them over the chat containers
                assert session.get(f"{stack.chat_url}/rooms/{room}/messages", headers=user.auth, timeout=10).ok

    reads(30)  # rate() needs each server's series before the run
    timeline.wait_scraped(stack.prometheus_url, time.time())
    started = time.time()
    reads(90)
    ended = time.time()
    row = dict.fromkeys(search.RUNS_COLUMNS, "")
    row.update(series="servers-3", servers="3", phase="grow", dir="x", status="ok", workload="hot")
    row.update(started=f"{started:.1f}", ended=f"{ended:.1f}")
    with open(tmp_path / "runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, search.RUNS_COLUMNS)
        writer.writeheader()
        writer.writerow(row)

    def recorded() -> bool:
        timeline.wait_scraped(stack.prometheus_url, ended)
        timeline.record(stack.prometheus_url, started, ended + 2 * timeline.STEP_S, tmp_path)
        lines = timeline.load(tmp_path)
        served = {line for line, points in lines.get("requests", {}).items() if max(v for _, v in points) > 0}
        return served == chats and "database (FerretDB)" in lines.get("cpu_cores", {})

    harness.wait_until(recorded, 60, "Prometheus to show every chat container's requests", interval=1)
    assert chats <= set(timeline.load(tmp_path)["cpu_cores"])
    assert timeline.plot(tmp_path)


@pytest.mark.local
def test_every_container_runs_as_a_non_root_user(stack):
    for container in stack.containers():
        name = container["Name"].lstrip("/")
        user = container["Config"]["User"]
        assert user and user.split(":")[0] not in ("root", "0"), f"{name} runs as {user or 'root'}"
        uid = stack.engine.docker("exec", name, "id", "-u").stdout.strip()
        assert uid != "0", f"{name} runs as root"


def listening_addresses(port: int) -> set[str]:
    """The host addresses something listens on at this TCP port (IPv4 and IPv6)."""
    return {
        connection.laddr.ip
        for connection in psutil.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port
    }


@pytest.mark.local
def test_published_ports_listen_on_loopback_only(stack):
    published = set()
    for container in stack.containers():
        for bindings in (container["NetworkSettings"]["Ports"] or {}).values():
            for binding in bindings or []:
                assert binding["HostIp"] == "127.0.0.1", (container["Name"], binding)
                published.add(int(binding["HostPort"]))
    assert published == set(stack.ports.values())
    for port in published:
        assert listening_addresses(port) == {"127.0.0.1"}, f"port {port}: {listening_addresses(port)}"


@pytest.mark.local
def test_contract_tests_pass_against_the_containers(stack):
    # Login and profile on their published ports, chat through HAProxy.
    assert_contract_suites_pass(stack.login_url, stack.profile_url, stack.chat_url)


@pytest.mark.local
def test_three_chat_containers_answer_with_distinct_instances(stack):
    assert len(stack.containers("chat")) == 3
    stack.wait_servers_up(3)
    instances, servers = instances_answering(stack)
    assert len(instances) == 3 and all(re.fullmatch(r"chat@\d+", value) for value in instances), instances
    assert len(servers) == 3, servers


def repository_state() -> str:
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True, timeout=30
    ).stdout
    digests = [hashlib.sha256((ROOT / name).read_bytes()).hexdigest() for name in ("compose.yaml", HAPROXY_CONFIG)]
    return status + " ".join(digests)


@pytest.mark.local
def test_scaling_the_chat_tier_to_five_and_back_changes_no_file(stack):
    before = repository_state()
    try:
        stack.compose("up", "-d", "--scale", "chat=5")
        stack.wait_all_healthy(CONTAINERS + 2)
        stack.wait_servers_up(5)
        instances, servers = instances_answering(stack, 100)
        assert len(instances) == 5 and len(servers) == 5, (instances, servers)
    finally:
        stack.compose("up", "-d", "--scale", "chat=3")
    stack.wait_all_healthy(CONTAINERS)
    stack.wait_servers_up(3)
    assert len(instances_answering(stack)[0]) == 3
    assert repository_state() == before, "scaling changed a file"


def restart_count(stack, name: str) -> int:
    return int(stack.engine.docker("inspect", "--format", "{{.RestartCount}}", name).stdout)


@pytest.mark.local
def test_killed_chat_containers_lose_no_acknowledged_message_and_come_back(stack):
    user = register_and_login(stack.login_url)
    room = unique_name("room-")
    assert (
        requests.post(f"{stack.chat_url}/rooms", json={"name": room}, headers=user.auth, timeout=10).status_code == 201
    )
    outcomes: Counter = Counter()
    acknowledged: list[dict] = []
    stop = threading.Event()
    deadline = time.monotonic() + 180

    def client_loop(client: int):
        session, after = requests.Session(), 0
        for number in range(10000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                posted = session.post(
                    f"{stack.chat_url}/rooms/{room}/messages",
                    json={"text": f"c{client}-m{number}"},
                    headers={**user.auth, "Idempotency-Key": uuid.uuid4().hex},
                    timeout=20,
                )
                outcomes[posted.status_code] += 1
                if posted.status_code == 201:
                    acknowledged.append(posted.json())
                read = session.get(
                    f"{stack.chat_url}/rooms/{room}/messages", params={"after": after}, headers=user.auth, timeout=20
                )
                outcomes[read.status_code] += 1
                if read.status_code == 200:
                    after = read.json()["next_after"]
            except requests.RequestException as error:
                outcomes[f"{type(error).__name__}: {str(error)[:120]}"] += 1

    clients = [threading.Thread(target=client_loop, args=(number,)) for number in range(2)]
    for client in clients:
        client.start()
    try:
        crashed, killed = [container["Name"].lstrip("/") for container in stack.containers("chat")[:2]]
        time.sleep(4)
        # A crash, as Docker sees one: the container's main process dies of SIGKILL. The
        # restart policy (unless-stopped) brings it back by itself.
        restarts = restart_count(stack, crashed)
        pid = int(stack.engine.docker("inspect", "--format", "{{.State.Pid}}", crashed).stdout)
        assert Path(f"/proc/{pid}").exists(), "the engine runs elsewhere: its container processes are not here"
        os.kill(pid, signal.SIGKILL)
        harness.wait_until(lambda: stack.servers_up() < 3, 15, "HAProxy to mark the crashed server down", 0.2)
        harness.wait_until(lambda: restart_count(stack, crashed) > restarts, 30, f"Docker to restart {crashed}", 0.5)
        stack.wait_servers_up(3)
        time.sleep(2)
        # `docker kill`: Docker counts it as a deliberate stop, so the restart policy leaves
        # the container stopped (docs/docker.md); `docker compose up -d` brings it back.
        stack.engine.docker("kill", killed)
        harness.wait_until(lambda: stack.servers_up() < 3, 15, "HAProxy to mark the killed server down", 0.2)
        time.sleep(2)
        stack.compose("up", "-d")
        stack.wait_all_healthy(CONTAINERS, 60)
        stack.wait_servers_up(3)
        # Enough traffic that 0.1 % is a count, not a fraction of one request.
        harness.wait_until(lambda: sum(outcomes.values()) >= 3000, 120, "3000 requests", 0.5)
    finally:
        stop.set()
        for client in clients:
            client.join(60)

    total = sum(outcomes.values())
    errors = total - outcomes[200] - outcomes[201]
    assert total >= 3000, outcomes
    assert errors <= total // 1000, outcomes
    texts = [message["text"] for message in read_room(stack.chat_url, room, user.auth)]
    assert len(texts) == len(set(texts)), "a message was stored twice"
    assert {message["text"] for message in acknowledged} <= set(texts), "an acknowledged message was lost"


@pytest.mark.local
def test_services_answer_503_problems_while_the_database_container_is_stopped_and_recover(stack):
    user = register_and_login(stack.login_url)
    room = unique_name("room-")
    assert (
        requests.post(f"{stack.chat_url}/rooms", json={"name": room}, headers=user.auth, timeout=10).status_code == 201
    )
    service_restarts = {
        container["Name"]: container["RestartCount"]
        for container in stack.containers()
        if container["Config"]["Labels"]["com.docker.compose.service"] != "mongo"
    }
    stack.compose("stop", "mongo")
    try:
        harness.wait_until(
            lambda: requests.get(stack.login_url + "/ready", timeout=10).status_code == 503,
            30,
            "login to notice the database is gone",
            0.5,
        )
        assert_problem(requests.get(stack.login_url + "/ready", timeout=10), 503)
        assert_problem(
            requests.post(
                stack.login_url + "/login", json={"username": user.username, "password": user.password}, timeout=20
            ),
            503,
        )
        assert_problem(requests.get(stack.profile_url + "/ready", timeout=10), 503)
        # Every chat server fails /ready, so HAProxy takes them all out and answers itself.
        stack.wait_servers_up(0, 30)
        assert_problem(
            requests.post(
                f"{stack.chat_url}/rooms/{room}/messages", json={"text": "while down"}, headers=user.auth, timeout=20
            ),
            503,
        )
    finally:
        stack.compose("start", "mongo")
    harness.wait_until(lambda: harness.http_ok(stack.login_url + "/ready"), 60, "login to recover", 0.5)
    stack.wait_servers_up(3, 60)
    posted = requests.post(
        f"{stack.chat_url}/rooms/{room}/messages", json={"text": "after"}, headers=user.auth, timeout=10
    )
    assert posted.status_code == 201, posted.text
    assert [message["text"] for message in read_room(stack.chat_url, room, user.auth)] == ["after"]
    assert {
        container["Name"]: container["RestartCount"]
        for container in stack.containers()
        if container["Name"] in service_restarts
    } == service_restarts, "a service container was restarted"


@pytest.mark.local
def test_messages_survive_compose_down_and_up(stack):
    user = register_and_login(stack.login_url)
    room = unique_name("room-")
    assert (
        requests.post(f"{stack.chat_url}/rooms", json={"name": room}, headers=user.auth, timeout=10).status_code == 201
    )
    texts = [f"kept {number}" for number in range(5)]
    for text in texts:
        assert (
            requests.post(
                f"{stack.chat_url}/rooms/{room}/messages", json={"text": text}, headers=user.auth, timeout=10
            ).status_code
            == 201
        )
    stack.compose("down")  # no --volumes: the database volume stays
    assert stack.containers(running_only=False) == []
    volumes = stack.engine.docker(
        "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}"
    ).stdout.split()
    assert volumes == [f"{stack.project}_mongo-data"]
    stack.up()
    stack.wait_all_healthy(CONTAINERS)
    # Healthy containers are not yet servers HAProxy has checked: wait for those too.
    stack.wait_servers_up(3)
    stored = read_room(stack.chat_url, room, user.auth)  # the token is in the database too
    assert [message["text"] for message in stored] == texts
    assert [message["seq"] for message in stored] == [1, 2, 3, 4, 5]


def run_service_image(stack, *command: str, **environment: str) -> subprocess.CompletedProcess:
    image = stack.settings.get("CHATSYS_IMAGE", "chatsys:latest")
    settings = [word for name, value in environment.items() for word in ("-e", f"{name}={value}")]
    return stack.engine.docker("run", "--rm", "--network", "none", *settings, image, *command, timeout=120, check=False)


@pytest.mark.local
def test_service_container_gives_up_when_the_database_never_answers(stack):
    result = run_service_image(
        stack,
        "python",
        "-c",
        "print('command started')",
        MONGO_URI="mongodb://127.0.0.1:9/chatsys",
        PORT="4000",
        DB_WAIT_SECONDS="2",
    )
    assert result.returncode != 0
    assert "command started" not in result.stdout
    assert "no answer from the database" in result.stderr


@pytest.mark.local
def test_service_container_refuses_a_mongo_uri_without_a_database_name(stack):
    result = run_service_image(
        stack, "python", "-c", "print('command started')", MONGO_URI="mongodb://127.0.0.1:9", PORT="4000"
    )
    assert result.returncode != 0 and "must name a database" in result.stderr
    assert "command started" not in result.stdout


# --- Swarm ----------------------------------------------------------------------------------------

SWARM_STACK = "chatsys-swarm-test"


@pytest.fixture(scope="module")
def swarm(stack):
    """A one-node swarm on an engine of its own (the compose stack's engine stays out of swarm
    mode), with the images the compose stack built, and the stack deployed from the same
    compose.yaml through docker/swarm-stack.sh."""
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        pytest.skip("the swarm runs on a private dockerd of its own, which needs root and dockerd (docker.io)")
    settings = stack.settings
    images = [settings.get("CHATSYS_IMAGE", "chatsys:latest"), settings["HAPROXY_IMAGE"], settings["MONGO_IMAGE"]]
    engine = docker_stack.start_swarm_engine()
    created = False
    try:
        docker_stack.copy_images(stack.engine, engine, images)
        state = engine.docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
        if state != "active":
            # Loopback only: the swarm's own ports (2377, 7946) stay off the network.
            engine.docker(
                "swarm",
                "init",
                "--advertise-addr",
                "127.0.0.1",
                "--listen-addr",
                "127.0.0.1:2377",
                "--default-addr-pool",
                docker_stack.SWARM_ADDRESS_POOL,
            )
            created = True
        yield swarm_lib.deploy(engine, SWARM_STACK, settings)
    finally:
        swarm_lib.remove(engine, SWARM_STACK)
        if created:
            engine.docker("swarm", "leave", "--force", check=False)
            # Swarm mode made it; its bridge would otherwise stay on the host.
            engine.docker("network", "rm", "docker_gwbridge", check=False)
        docker_stack.stop_engine(engine)


@pytest.mark.local
def test_swarm_runs_every_service_healthy_with_three_chat_replicas_behind_haproxy(swarm):
    # No service has a virtual IP (endpoint_mode dnsrr): the services find the database and
    # login by their names, and HAProxy finds the three chat tasks through Docker's DNS.
    swarm.wait_running(3)
    tasks = swarm.containers()
    assert len(tasks) == len(SERVICES_AND_DATABASE) + 2, tasks
    assert all("(healthy)" in status for status in tasks.values()), tasks
    swarm.wait_servers_up(3)
    instances, servers = instances_answering(swarm)
    assert len(instances) == 3 and all(re.fullmatch(r"chat@\d+", value) for value in instances), instances
    assert len(servers) == 3, servers


@pytest.mark.local
def test_contract_tests_pass_through_haproxy_in_the_swarm(swarm):
    swarm.wait_running(3)
    swarm.wait_servers_up(3)
    # Every port is HAProxy's, published in host mode on the node.
    assert_contract_suites_pass(swarm.url("LOGIN_PUBLISHED_PORT"), swarm.url("PROFILE_PUBLISHED_PORT"), swarm.chat_url)


@pytest.mark.local
def test_scaling_the_swarm_chat_service_reaches_haproxy_through_dns(swarm):
    service = swarm.service("chat")
    try:
        swarm.engine.docker("service", "scale", "--detach", f"{service}=5")
        swarm.wait_running(5)
        swarm.wait_servers_up(5)
        instances, servers = instances_answering(swarm, 100)
        assert len(instances) == 5 and len(servers) == 5, (instances, servers)
    finally:
        swarm.engine.docker("service", "scale", "--detach", f"{service}=3")
    swarm.wait_running(3)
    swarm.wait_servers_up(3)
    assert len(instances_answering(swarm)[0]) == 3
