"""The stack deployed to a Docker swarm (docker/swarm-stack.sh), for the swarm tests of one
node (tests/deploy/test_docker.py) and of three (tests/deploy/test_swarm_nodes.py): the
deploy, the services and their tasks, HAProxy's view of the chat servers, and distinct
chat replicas answering."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from scripts.lib import haproxy_stats
from tests.lib import docker_stack, harness

ROOT = harness.ROOT
SERVICES_AND_DATABASE = ("mongo", "login", "profile", "chat", "haproxy")
# The database's migration: a one-shot the services start after (a job in a swarm).
MIGRATION = docker_stack.ONE_SHOT
PORT_NAMES = ("CHAT_PUBLISHED_PORT", "LOGIN_PUBLISHED_PORT", "PROFILE_PUBLISHED_PORT", "STATS_PUBLISHED_PORT")


@dataclass
class SwarmStack:
    """The stack deployed to a swarm, with HAProxy's ports published in host mode on the
    node at `address`."""

    engine: docker_stack.Engine  # a manager's
    name: str
    ports: dict[str, int]
    stats_password: str
    address: str = "127.0.0.1"

    def url(self, name: str) -> str:
        return f"http://{self.address}:{self.ports[name]}"

    @property
    def chat_url(self) -> str:
        return self.url("CHAT_PUBLISHED_PORT")

    @property
    def login_url(self) -> str:
        return self.url("LOGIN_PUBLISHED_PORT")

    @property
    def profile_url(self) -> str:
        return self.url("PROFILE_PUBLISHED_PORT")

    def service(self, name: str) -> str:
        return f"{self.name}_{name}"

    def services(self) -> dict[str, str]:
        """Service name (without the stack's prefix) -> "running/desired" replicas (a job's
        with "(completed/total completed)" after them)."""
        lines = self.engine.docker("stack", "services", self.name, "--format", "{{.Name}} {{.Replicas}}").stdout
        return {
            name.removeprefix(f"{self.name}_"): replicas
            for name, replicas in (line.split(maxsplit=1) for line in lines.splitlines() if line.strip())
        }

    def containers(self) -> dict[str, str]:
        """Task container name -> docker ps status, on the manager's own engine."""
        lines = self.engine.docker(
            "ps", "--filter", f"label=com.docker.stack.namespace={self.name}", "--format", "{{.Names}}\t{{.Status}}"
        ).stdout
        return dict(line.split("\t", 1) for line in lines.splitlines() if line.strip())

    def running_tasks(self, service: str) -> list[tuple[str, str]]:
        """(node, current state) of each task of the service that should run."""
        lines = self.engine.docker(
            "service",
            "ps",
            self.service(service),
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}}\t{{.CurrentState}}",
        ).stdout
        return [tuple(line.split("\t", 1)) for line in lines.splitlines() if line.strip()]

    def server_states(self) -> dict[str, str]:
        """HAProxy's chat servers and their state, from the published stats page."""
        answer = requests.get(
            self.url("STATS_PUBLISHED_PORT") + "/stats;csv", auth=("stats", self.stats_password), timeout=5
        )
        answer.raise_for_status()
        return haproxy_stats.server_states(answer.text)

    def servers_up(self) -> int:
        try:
            return list(self.server_states().values()).count("UP")
        except requests.RequestException:
            return -1

    def wait_running(self, chat_replicas: int, timeout: float = 180) -> None:
        """Until every task runs and is healthy (swarm counts a task running once healthy)."""
        wanted = {name: "1/1" for name in SERVICES_AND_DATABASE} | {"chat": f"{chat_replicas}/{chat_replicas}"}

        def migrated_and_running() -> bool:
            services = self.services()
            return services.pop(MIGRATION, "").endswith("(1/1 completed)") and services == wanted

        try:
            harness.wait_until(
                migrated_and_running, timeout, "the migration job to complete and every task to run healthy", 1
            )
        except TimeoutError:
            raise AssertionError(f"swarm services {self.services()}, tasks {self.containers()}") from None

    def wait_servers_up(self, count: int, timeout: float = 60) -> None:
        try:
            harness.wait_until(
                lambda: self.servers_up() == count, timeout, f"HAProxy in the swarm to see {count} chat servers up", 0.5
            )
        except TimeoutError:
            raise AssertionError(f"HAProxy's chat servers: {self.server_states()}") from None


def deploy(
    engine: docker_stack.Engine,
    name: str,
    settings: dict[str, str],
    address: str = "127.0.0.1",
    more_files: tuple[Path, ...] = (),
) -> SwarmStack:
    """docker/swarm-stack.sh's file (and more_files over it) deployed as stack `name`, with
    the image settings of `settings` and HAProxy's ports on free ports."""
    ports = dict(zip(PORT_NAMES, docker_stack.free_ports(len(PORT_NAMES)), strict=True))
    password = os.urandom(16).hex()
    environment = {
        **engine.env,
        **{key: value for key, value in settings.items() if key.endswith(("_IMAGE", "_HEALTHCHECK"))},
        **{key: str(port) for key, port in ports.items()},
        **harness.UNLIMITED_EDGE,
        "HAPROXY_STATS_PASSWORD": password,
    }
    rendered = subprocess.run(
        [str(ROOT / "docker" / "swarm-stack.sh")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    files = [word for path in more_files for word in ("-c", str(path))]
    # The images exist on the nodes only: no registry to ask for their digests.
    run_with_input(
        ["docker", "stack", "deploy", "--resolve-image", "never", "-c", "-", *files, name], rendered, environment
    )
    return SwarmStack(engine, name, ports, password, address)


def remove(engine: docker_stack.Engine, name: str) -> None:
    """docker stack rm, and wait until its containers and network are gone (its volume then
    has no user left to keep it). The migration job's container, exited, is not removed with
    its service: it is pruned (docs/docker.md)."""
    engine.docker("stack", "rm", name, check=False)
    label = f"label=com.docker.stack.namespace={name}"

    def gone() -> bool:
        engine.docker("container", "prune", "--force", "--filter", label, check=False)
        return not (
            engine.docker("ps", "--all", "--quiet", "--filter", label).stdout.strip()
            or engine.docker("network", "ls", "--quiet", "--filter", label).stdout.strip()
        )

    harness.wait_until(
        gone,
        120,
        "the swarm stack's containers and network to go",
        1,
    )
    engine.docker("volume", "rm", f"{name}_mongo-data", check=False)


def run_with_input(argv: list[str], text: str, environment: dict[str, str]) -> str:
    result = subprocess.run(argv, input=text, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def instances_answering(stack, requests_count: int = 60) -> tuple[set[str], set[str]]:
    """X-Instance and X-Served-By values seen over this many GET /health through HAProxy."""
    instances, servers = set(), set()
    with requests.Session() as session:
        for _ in range(requests_count):
            answer = session.get(stack.chat_url + "/health", timeout=5)
            assert answer.status_code == 200, answer.text
            instances.add(answer.headers["X-Instance"])
            servers.add(answer.headers["X-Served-By"])
    return instances, servers
