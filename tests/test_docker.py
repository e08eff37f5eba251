"""Docker packaging: the Dockerfile, compose.yaml and the entry script hold to the deployment
rules, and each container's command line starts its service.

No Docker engine runs here, so no image is built or run. The files are checked as written
(with docker-compose, the docker CLI and haproxy), and every container's
command line, read out of those files, is run directly on this machine against the test
database: the same script, module, gunicorn config and environment variable names.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from tests import harness

ROOT = harness.ROOT
COMPOSE_FILE = ROOT / "compose.yaml"
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
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    """compose.yaml as compose resolves it with no .env file and no settings in the environment."""
    docker_compose = harness.require_tool("docker-compose")
    empty_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env_file.write_text("")
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file), "config"],
        cwd=ROOT, env=clean_compose_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


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
    pairs = set()
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            pairs.add((int(port["published"]), int(port["target"])))
        else:
            parts = str(port).split(":")
            assert len(parts) >= 2, f"port {port} is published on a random host port"
            pairs.add((int(parts[-2]), int(parts[-1].split("/")[0])))
    return pairs


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


def unescape_compose(text: str) -> str:
    return text.replace("$$", "$")


# --- the files hold to the rules --------------------------------------------------------------

def test_compose_file_is_valid_without_an_env_file(compose):
    # The fixture ran `docker-compose config` with no .env file and asserted it passed.
    assert set(compose["services"]) >= {"mongo", "login", "profile", "chat", "haproxy"}


def test_each_service_and_the_database_run_in_their_own_containers(compose):
    services = compose["services"]
    assert set(services) == {"mongo", "login", "profile", "chat", "haproxy"}
    assert services["mongo"]["image"].startswith("mongo:")
    assert services["haproxy"]["image"].startswith("haproxy:")
    for name in SERVICES:
        assert builds_our_image(services[name]), f"{name} is not built from the Dockerfile"
        module = f"{name}_service.wsgi:app"
        assert services[name]["command"] == ["gunicorn", "-c", "conf/gunicorn.conf.py", module], \
            f"{name} must start like outside Docker (tests/harness.py gunicorn_argv)"
    images = {services[name]["image"] for name in SERVICES}
    assert len(images) == 1, "login, profile and chat share one image"


def test_service_image_is_slim_python_with_dependencies_in_a_cached_layer(dockerfile):
    assert dockerfile.all("FROM")[0].arguments.split()[0] == "python:3.11-slim"
    copy_requirements = dockerfile.index("COPY", lambda arguments: arguments.split()[0] == "requirements.txt")
    install = dockerfile.index("RUN", lambda arguments: "pip install -r" in arguments)
    first_code_copy = dockerfile.index("COPY", lambda arguments: "_service" in arguments or "service_kit" in arguments)
    assert copy_requirements < install < first_code_copy, \
        "requirements.txt must be copied and installed before the code, so code changes reuse that layer"
    pinned = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert pinned and all("==" in line for line in pinned), "every dependency is pinned"


def test_service_image_runs_as_a_non_root_user(dockerfile):
    user = dockerfile.last("USER").arguments.split(":")[0]
    assert user not in ("root", "0")
    assert dockerfile.index("USER") > dockerfile.index("RUN", lambda arguments: "useradd" in arguments)


def test_service_image_listens_beyond_loopback_and_starts_through_the_entry_script(dockerfile):
    assert dockerfile.env().get("BIND_HOST") == "0.0.0.0"
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
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
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
        healthcheck = spec.get("healthcheck") or {}
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"
        assert healthcheck.get("test") or builds_our_image(spec), f"{name} has no healthcheck"
    mongo_check = compose["services"]["mongo"]["healthcheck"]["test"]
    assert "mongosh" in mongo_check and "db.adminCommand('ping')" in mongo_check


def test_containers_start_only_after_their_dependencies_are_healthy(compose):
    services = compose["services"]
    expected = {"login": {"mongo"}, "profile": {"mongo", "login"}, "chat": {"mongo", "login"}, "haproxy": {"chat"}}
    for name, needs in expected.items():
        depends_on = services[name].get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        assert set(depends_on) == needs, name
        for dependency, condition in depends_on.items():
            assert condition.get("condition") == "service_healthy", f"{name} waits for {dependency} only to start"


def test_published_ports_match_the_contract(compose):
    services = compose["services"]
    assert published_ports(services["haproxy"]) == {(5000, 5000), (8404, 8404)}
    assert published_ports(services["login"]) == {(4100, 4100)}
    assert published_ports(services["profile"]) == {(4200, 4200)}
    assert published_ports(services["chat"]) == set(), "chat servers are reached through HAProxy only"
    assert published_ports(services["mongo"]) == set()
    for name in SERVICES:
        assert environment_of(services[name])["PORT"] == str(CONTRACT_PORTS[name])


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
    assert targets == {int(environment["HAPROXY_PORT"]), int(environment["HAPROXY_STATS_PORT"])}
    assert environment["HAPROXY_RUNTIME_SOCKET"].startswith(("/tmp/", "/var/lib/haproxy/")), \
        "the official image runs as user haproxy, who can write only there"
    assert "LOGIN_URL" in environment_of(chat) and "LOGIN_URL" in environment_of(services["profile"])


def test_haproxy_mounts_the_shared_config_read_only(compose):
    mounts = mounts_of(compose["services"]["haproxy"])
    assert len(mounts) == 1
    source, target, read_only = mounts[0]
    assert (ROOT / source).resolve() == ROOT / HAPROXY_CONFIG
    assert target == HAPROXY_IMAGE_CONFIG and read_only


def test_env_example_lists_every_compose_setting():
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE_FILE.read_text()))
    listed = set(re.findall(r"^#?\s*(\w+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert used, "compose.yaml reads no setting"
    assert used <= listed, f".env.example does not mention {sorted(used - listed)}"


def test_swarm_stack_file_is_accepted_by_docker_stack(tmp_path):
    docker = harness.require_tool("docker")
    stack = subprocess.run([str(ROOT / "docker" / "swarm-stack.sh")], capture_output=True, text=True, timeout=30)
    assert stack.returncode == 0, stack.stderr
    # `docker stack config` is the loader of `docker stack deploy`; it needs no engine.
    environment = {**clean_compose_environment(), "DOCKER_CONFIG": str(tmp_path)}
    result = subprocess.run([docker, "stack", "config", "-c", "-"], input=stack.stdout, cwd=ROOT,
                            env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["chat"]["deploy"]["replicas"] == 3
    assert services["chat"]["deploy"]["endpoint_mode"] == "dnsrr"
    assert services["haproxy"]["depends_on"] == ["chat"]


def test_haproxy_config_is_valid_with_the_compose_environment(compose):
    environment = {"PATH": os.environ.get("PATH", ""), **environment_of(compose["services"]["haproxy"])}
    result = subprocess.run([haproxy_binary(), "-c", "-f", HAPROXY_CONFIG], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the containers' command lines, run on this machine ------------------------------------------

def haproxy_binary() -> str:
    return harness.require_tool("haproxy", "/usr/sbin/haproxy")


def venv_first_path() -> str:
    """The image's /opt/venv/bin comes first on its PATH; here that is the project's venv."""
    return f"{harness.VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


def container_argv(compose: dict, dockerfile: Dockerfile, service: str) -> list[str]:
    """ENTRYPOINT + command of the service's container, with the image's WORKDIR mapped to the repo."""
    spec = compose["services"][service]
    entrypoint = spec.get("entrypoint") or dockerfile.last("ENTRYPOINT").exec_form()
    command = spec.get("command") or dockerfile.last("CMD").exec_form()
    if isinstance(entrypoint, str):
        entrypoint = shlex.split(entrypoint)
    if isinstance(command, str):
        command = shlex.split(command)
    workdir = dockerfile.last("WORKDIR").arguments.rstrip("/") + "/"
    return [str(ROOT / word[len(workdir):]) if word.startswith(workdir) else word for word in [*entrypoint, *command]]


def container_env(compose: dict, dockerfile: Dockerfile, service: str, **host_values: str) -> dict[str, str]:
    """The container's environment (image ENV, then compose), with the host-specific values
    replaced; each replaced name must be one the container really sets."""
    image_env = {name: value for name, value in dockerfile.env().items() if name not in ("PATH", "VIRTUAL_ENV")}
    environment = {**image_env, **environment_of(compose["services"][service])}
    for name in host_values:
        assert name in environment, f"the {service} container sets no {name}"
    environment.update(host_values)
    environment["PATH"] = venv_first_path()
    return environment


def spawn_container(processes, compose, dockerfile, service, port, host="127.0.0.1", **host_values):
    environment = container_env(compose, dockerfile, service, PORT=str(port), BIND_HOST=host, **host_values)
    process = processes.spawn(f"container-{service}-{host}-{port}", container_argv(compose, dockerfile, service),
                              environment)
    url = f"http://{host}:{port}"
    try:
        harness.wait_until(lambda: harness.http_ok(url + "/ready"), 30, f"{service} container command at {url}")
    except TimeoutError:
        raise AssertionError(f"{service} did not become ready:\n{process.log_tail()}") from None
    return process, url


@pytest.fixture(scope="module")
def container_services(processes, database, compose, dockerfile):
    """login, profile and chat, each started by its container's command line."""
    started, urls = [], {}
    login, urls["login"] = spawn_container(processes, compose, dockerfile, "login", harness.free_port(),
                                           MONGO_URI=database.uri)
    started.append(login)
    for service in ("profile", "chat"):
        process, urls[service] = spawn_container(processes, compose, dockerfile, service, harness.free_port(),
                                                 MONGO_URI=database.uri, LOGIN_URL=urls["login"])
        started.append(process)
    yield urls
    for process in started:
        process.stop()


@pytest.mark.local
@pytest.mark.parametrize("service", SERVICES)
def test_container_command_line_starts_a_ready_service(container_services, service):
    url = container_services[service]
    ready = requests.get(url + "/ready", timeout=5)
    assert ready.status_code == 200, ready.text
    port = url.rsplit(":", 1)[1]
    assert ready.headers["X-Instance"] == f"{service}@{port}", "the container loaded another service's module"


@pytest.mark.local
@pytest.mark.parametrize("service", SERVICES)
def test_image_healthcheck_passes_against_the_running_service(container_services, dockerfile, service):
    port = container_services[service].rsplit(":", 1)[1]
    environment = {**os.environ, "PORT": port, "PATH": venv_first_path()}
    result = subprocess.run(["/bin/sh", "-c", dockerfile.healthcheck_command()], env=environment,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def entrypoint_run(command: list[str], timeout: float = 60, **environment: str) -> subprocess.CompletedProcess:
    base = {"PATH": venv_first_path(), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([str(ROOT / "docker" / "entrypoint.sh"), *command], cwd=ROOT, env={**base, **environment},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.local
def test_entrypoint_gives_up_when_the_database_never_answers():
    closed_port = harness.free_port()
    result = entrypoint_run(["python", "-c", "print('command started')"],
                            MONGO_URI=f"mongodb://127.0.0.1:{closed_port}/chatsys", PORT="4000", DB_WAIT_SECONDS="2")
    assert result.returncode != 0
    assert "command started" not in result.stdout
    assert "no answer from the database" in result.stderr


@pytest.mark.local
def test_entrypoint_refuses_a_mongo_uri_without_a_database_name():
    result = entrypoint_run(["python", "-c", "print('command started')"],
                            MONGO_URI="mongodb://127.0.0.1:27017", PORT="4000", timeout=30)
    assert result.returncode != 0 and "must name a database" in result.stderr
    assert "command started" not in result.stdout


@pytest.mark.local
def test_entrypoint_hands_over_to_the_command_with_its_logs_on_stdout(database):
    result = entrypoint_run(["python", "-c", "import sys; sys.stderr.write('a log line')"],
                            MONGO_URI=database.uri, PORT="4000")
    assert result.returncode == 0, result.stderr
    assert "a log line" in result.stdout


# --- HAProxy in DNS mode, as in compose -------------------------------------------------------

class ContainerDns:
    """Stands in for Docker's embedded DNS at 127.0.0.11:53: one A record per container of a
    service, the way compose answers for a scaled service's name. Needs root (port 53)."""

    ADDRESS = ("127.0.0.11", 53)

    def __init__(self):
        self.records: dict[str, list[str]] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(self.ADDRESS)
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self.running = False
        self.thread.join(5)
        self.sock.close()

    def _serve(self):
        while self.running:
            try:
                query, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            try:
                self.sock.sendto(self._answer(query), peer)
            except (IndexError, struct.error, UnicodeDecodeError):
                continue

    def _answer(self, query: bytes) -> bytes:
        ident = struct.unpack("!H", query[:2])[0]
        position, labels = 12, []
        while query[position]:
            length = query[position]
            labels.append(query[position + 1:position + 1 + length].decode())
            position += 1 + length
        question_end = position + 5
        query_type = struct.unpack("!H", query[position + 1:position + 3])[0]
        addresses = self.records.get(".".join(labels).lower())
        answers = []
        if addresses and query_type == 1:  # A; AAAA gets an empty answer, as from Docker
            answers = [b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 4) + socket.inet_aton(address)
                       for address in addresses]
        flags = 0x8180 | (0 if addresses is not None else 3)  # response, recursion; else NXDOMAIN
        header = struct.pack("!HHHHHH", ident, flags, 1, len(answers), 0, 0)
        return header + query[12:question_end] + b"".join(answers)


def port_free_on(hosts: list[str]) -> int:
    """A TCP port free on every one of these loopback addresses."""
    for _ in range(50):
        port = harness.free_port()
        try:
            for host in hosts:
                with socket.socket() as probe:
                    probe.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every chat address")


CHAT_HOSTS = [f"127.0.0.{last}" for last in range(2, 7)]


@pytest.fixture(scope="module")
def dns_mode_balancer(processes, compose):
    """HAProxy started with compose's environment; only addresses, ports and the socket path
    are this machine's."""
    chat_port = port_free_on(CHAT_HOSTS)
    port, stats_port = harness.free_port(), harness.free_port()
    socket_path = processes.dir / f"haproxy-dns-{port}.sock"
    environment = environment_of(compose["services"]["haproxy"])
    environment.update(HAPROXY_BIND="127.0.0.1", HAPROXY_PORT=str(port), HAPROXY_STATS_BIND="127.0.0.1",
                       HAPROXY_STATS_PORT=str(stats_port), HAPROXY_RUNTIME_SOCKET=str(socket_path),
                       CHAT_DNS_PORT=str(chat_port))
    process = processes.spawn(f"haproxy-dns-{port}", [haproxy_binary(), "-db", "-f", str(ROOT / HAPROXY_CONFIG)],
                              environment)
    balancer = harness.LoadBalancer(process, port, stats_port, socket_path, environment)
    try:
        harness.wait_until(lambda: harness.port_open(port) and socket_path.exists(), 10, "HAProxy in DNS mode")
    except TimeoutError:
        raise AssertionError(f"HAProxy did not start:\n{process.log_tail()}") from None
    yield balancer, chat_port
    process.stop()


@pytest.mark.local
def test_haproxy_container_healthcheck_passes(compose, dns_mode_balancer):
    balancer, _ = dns_mode_balancer
    test = compose["services"]["haproxy"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    command = [unescape_compose(word) for word in test[1:]]
    result = subprocess.run(command, env={**balancer.env, "PATH": os.environ.get("PATH", "")},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert sorted(balancer.server_states()) == sorted(
        f"chat{slot}" for slot in range(1, int(balancer.env["CHAT_DNS_SLOTS"]) + 1))


@pytest.fixture
def container_dns():
    # Standing in for Docker's DNS means listening on 127.0.0.11:53: the suite runs as root.
    assert os.geteuid() == 0, "the stand-in for Docker's DNS listens on port 53, which needs root"
    dns = ContainerDns()
    yield dns
    dns.close()


@pytest.mark.local
def test_haproxy_uses_every_chat_container_dns_names_after_scaling(processes, database, compose, dockerfile,
                                                                   container_services, dns_mode_balancer,
                                                                   container_dns):
    balancer, chat_port = dns_mode_balancer
    dns_name = environment_of(compose["services"]["haproxy"])["CHAT_DNS_NAME"]
    started = []

    def scale_to(count: int):
        for host in CHAT_HOSTS[len(started):count]:
            process, _ = spawn_container(processes, compose, dockerfile, "chat", chat_port, host=host,
                                        MONGO_URI=database.uri, LOGIN_URL=container_services["login"])
            started.append(process)
        container_dns.records[dns_name] = CHAT_HOSTS[:count]
        harness.wait_until(lambda: list(balancer.server_states().values()).count("UP") == count, 30,
                           f"HAProxy to see {count} chat servers up")

    try:
        scale_to(3)  # deploy.replicas
        scale_to(5)  # docker compose up --scale chat=5: same files, two more addresses behind the name
        served_by = set()
        for _ in range(50):
            answer = requests.get(balancer.url + "/health", timeout=5)
            assert answer.status_code == 200
            served_by.add(answer.headers["X-Served-By"])
        assert len(served_by) == 5, served_by  # every replica answers, told apart by HAProxy
        served = {}
        for row in balancer.command("show stat").splitlines():
            cells = row.split(",")
            if len(cells) > 17 and cells[0] == "chat_servers" and cells[1] != "BACKEND" and cells[17] == "UP":
                served[cells[1]] = int(cells[7])
        assert len(served) == 5 and all(count > 0 for count in served.values()), served
    finally:
        for process in started:
            process.stop()
