"""The compose stack on a real Docker engine, for the Docker tests: the engine (the one that
answers, else a private dockerd that is stopped again at the end), the images and one
compose project of our own on free loopback ports, through the scripts a user runs
(scripts/docker-engine.sh, scripts/docker-stack.sh)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

from scripts.lib import haproxy_stats
from tests.lib import harness

ROOT = harness.ROOT
ENGINE_SCRIPT = ROOT / "scripts" / "docker-engine.sh"
STACK_SCRIPT = ROOT / "scripts" / "docker-stack.sh"
SERVICES = ("mongo", "login", "profile", "chat", "haproxy")
# compose.yaml's one-shot: the database's migration, which exits 0 before the services start.
ONE_SHOT = "migrate"


def run(
    argv: list[str], env: dict[str, str], timeout: float = 120, check: bool = True, **kwargs
) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@dataclass
class Engine:
    host: str
    started_here: bool
    env: dict[str, str]

    def docker(self, *args: str, timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return run(["docker", *args], self.env, timeout, check, **kwargs)


def start_engine() -> Engine:
    """The engine that answers, or a private one started now (stopped by stop_engine)."""
    env = {**os.environ}
    found = run([str(ENGINE_SCRIPT), "host"], env, 30, check=False)
    if found.returncode == 0:
        host, started = found.stdout.strip(), False
    else:
        host, started = run([str(ENGINE_SCRIPT), "start"], env, 120).stdout.strip(), True
    return Engine(host, started, {**env, "DOCKER_HOST": host})


def stop_engine(engine: Engine) -> None:
    if engine.started_here:
        run([str(ENGINE_SCRIPT), "stop"], engine.env, 120, check=False)


@dataclass
class Stack:
    engine: Engine
    project: str
    ports: dict[str, int]
    env: dict[str, str]
    up_seconds: float = 0.0
    up_output: str = ""
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def chat_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['CHAT_PUBLISHED_PORT']}"

    @property
    def login_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['LOGIN_PUBLISHED_PORT']}"

    @property
    def profile_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['PROFILE_PUBLISHED_PORT']}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['STATS_PUBLISHED_PORT']}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['PROMETHEUS_PUBLISHED_PORT']}"

    def script(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return run([str(STACK_SCRIPT), *args], self.env, timeout, check)

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return self.script("compose", *args, timeout=timeout, check=check)

    def up(self) -> None:
        started = time.monotonic()
        result = self.script("up", timeout=900)
        self.up_seconds = time.monotonic() - started
        self.up_output = result.stdout + result.stderr
        state = Path(self.env["CHATSYS_VAR"]) / "docker" / f"{self.project}.env"
        for line in state.read_text().splitlines():
            name, _, value = line.partition("=")
            self.settings[name] = shlex.split(value)[0] if value else ""  # written with printf %q

    def containers(self, service: str | None = None, running_only: bool = True) -> list[dict]:
        """docker inspect of the project's containers (of one service), by container number."""
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = self.engine.docker("ps", *([] if running_only else ["--all"]), "--quiet", *filters).stdout.split()
        if not ids:
            return []
        found = json.loads(self.engine.docker("inspect", *ids).stdout)
        return sorted(
            found,
            key=lambda c: (
                c["Config"]["Labels"]["com.docker.compose.service"],
                int(c["Config"]["Labels"].get("com.docker.compose.container-number", 0)),
            ),
        )

    def health(self) -> dict[str, str]:
        """Every container's health but the migration's, a one-shot that exits once done."""
        return {
            c["Name"].lstrip("/"): (c["State"].get("Health") or {}).get("Status", "none")
            for c in self.containers(running_only=False)
            if c["Config"]["Labels"]["com.docker.compose.service"] != ONE_SHOT
        }

    def migration_exit_codes(self) -> list[int]:
        return [c["State"]["ExitCode"] for c in self.containers(ONE_SHOT, running_only=False)]

    def wait_all_healthy(self, expected: int, timeout: float = 180) -> None:
        def all_healthy():
            health = self.health()
            return len(health) == expected and all(status == "healthy" for status in health.values())

        try:
            harness.wait_until(all_healthy, timeout, f"{expected} healthy containers", interval=1)
        except TimeoutError:
            raise AssertionError(f"not all healthy: {self.health()}") from None

    def server_states(self) -> dict[str, str]:
        """HAProxy's chat servers and their state, from the published stats page."""
        answer = requests.get(self.stats_url + "/stats;csv", timeout=5)
        answer.raise_for_status()
        return haproxy_stats.server_states(answer.text)

    def servers_up(self) -> int:
        try:
            return list(self.server_states().values()).count("UP")
        except requests.RequestException:
            return -1

    def wait_servers_up(self, count: int, timeout: float = 60) -> None:
        try:
            harness.wait_until(
                lambda: self.servers_up() == count, timeout, f"HAProxy to see {count} chat servers up", interval=0.5
            )
        except TimeoutError:
            raise AssertionError(f"HAProxy's chat servers: {self.server_states()}") from None


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(harness.free_port())
    return sorted(ports)


def new_stack(engine: Engine, var_dir: Path) -> Stack:
    """A compose project of our own: its own name, loopback ports and state directory."""
    project = f"chatsys-test-{uuid.uuid4().hex[:8]}"
    names = (
        "CHAT_PUBLISHED_PORT",
        "STATS_PUBLISHED_PORT",
        "LOGIN_PUBLISHED_PORT",
        "PROFILE_PUBLISHED_PORT",
        "PROMETHEUS_PUBLISHED_PORT",
    )
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {
        **engine.env,
        "COMPOSE_PROJECT_NAME": project,
        "CHATSYS_VAR": str(var_dir),
        # The tests always use the local stand-ins: FerretDB as the database, as elsewhere.
        "DOCKER_IMAGES": "local",
        **{name: str(port) for name, port in ports.items()},
        # A tag of its own, so that a user's chatsys:latest on a shared engine stays as it is.
        "CHATSYS_IMAGE": "chatsys-local/chatsys:latest",
        # Every test client is one address (Docker's gateway) registering hundreds of users:
        # the edge limits are lifted, as for the other test stacks (tests/lib/harness.py).
        **harness.UNLIMITED_EDGE,
    }
    for name in (
        "PUBLISHED_ADDRESS",
        "MONGO_IMAGE",
        "HAPROXY_IMAGE",
        "PYTHON_IMAGE",
        "MONGO_HEALTHCHECK",
        "PROMETHEUS",
        "PROMETHEUS_IMAGE",
        "NODE_EXPORTER_IMAGE",
        "FERRETDB_METRICS_TARGET",
        "DOCKER_COMPOSE_FILES",
        "COMPOSE_FILE",
    ):
        env.pop(name, None)  # the caller's settings would change what is tested
    return Stack(engine, project, ports, env)


# A second engine beside the one the compose stack runs on, for the swarm: swarm mode
# changes an engine's state (and leaves a docker_gwbridge), so it gets a dockerd of its own.
# It leaves the other engine's docker0 bridge and iptables chains alone (a bridge of its
# own, no iptables: host-mode ports go through docker-proxy), and takes its networks from
# address pools of its own (a default pool gave its docker_gwbridge the address of the
# other engine's docker0 while that one was down).
SWARM_ENGINE_BRIDGE = "chatsys-swarm0"
SWARM_ENGINE_OPTIONS = "--iptables=false --default-address-pool base=10.213.0.0/16,size=24"
SWARM_ADDRESS_POOL = "10.214.0.0/16"


def cache_dir() -> Path:
    """$CHATSYS_CACHE as scripts/lib/common.sh sets it."""
    if os.environ.get("CHATSYS_CACHE"):
        return Path(os.environ["CHATSYS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chatsys"


def start_swarm_engine() -> Engine:
    """The private dockerd of $CHATSYS_CACHE/docker-swarm (stopped by stop_engine if started now).
    Its images stay there between runs, like those of the first private engine."""
    directory = cache_dir() / "docker-swarm"
    host = f"unix://{directory}/docker.sock"
    env = {
        **os.environ,
        "CHATSYS_DOCKER_DIR": str(directory),
        "DOCKER_HOST": host,
        "DOCKERD_BRIDGE": SWARM_ENGINE_BRIDGE,
        "DOCKERD_OPTIONS": SWARM_ENGINE_OPTIONS,
    }
    result = run([str(ENGINE_SCRIPT), "start"], env, 120)
    return Engine(host, "started" in result.stderr.splitlines(), env)


def image_id(engine: Engine, image: str) -> str:
    return engine.docker("image", "inspect", "--format", "{{.Id}}", image, check=False).stdout.strip()


def copy_images(source: Engine, target: Engine, images: list[str]) -> list[str]:
    """docker save | docker load of the images target lacks or has in another version."""
    missing = [image for image in images if image_id(source, image) != image_id(target, image)]
    if missing:
        with subprocess.Popen(["docker", "save", *missing], env=source.env, stdout=subprocess.PIPE) as save:
            run(["docker", "load", "--quiet"], target.env, 300, stdin=save.stdout)
        assert save.returncode == 0, f"docker save {' '.join(missing)} failed"
    return missing
