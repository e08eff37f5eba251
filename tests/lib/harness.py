"""Real processes for the tests and the benchmarks: FerretDB, gunicorn services and HAProxy on free ports.

Everything started here is stopped at the end of the session, even when a test fails.
The same helpers serve the benchmarks under tools/.
"""

from __future__ import annotations

import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from scripts.lib import haproxy_runtime, haproxy_stats

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def require_tool(name: str, *fallbacks: str) -> str:
    """The path of a tool scripts/setup.sh installs; its absence fails the test (a skip
    would let a missing install step pass unnoticed)."""
    import pytest

    found = shutil.which(name) or next((path for path in fallbacks if Path(path).exists()), None)
    if found is None:
        pytest.fail(f"{name} is not installed; scripts/setup.sh installs it")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_port_block(size: int, low: int = 20000, high: int = 30000, mirror: int = 0) -> int:
    """The first of `size` consecutive free loopback ports between `low` and `high`, below
    the ephemeral range where free_port's come from: for a stack whose ports are laid out
    at fixed offsets (scripts/start.sh's METRICS_PORT_OFFSET). With `mirror`, the block
    `mirror` ports up is free too (each service's metrics port, for units that read
    METRICS_PORT_OFFSET from chatsys.env)."""
    for _ in range(200):
        base = random.randrange(low, high - size)
        ports = [*range(base, base + size), *(range(base + mirror, base + mirror + size) if mirror else ())]
        probes: list[socket.socket] = []
        try:
            for port in ports:
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError(f"no {size} consecutive free ports between {low} and {high}")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@dataclass
class Process:
    """One child process in its own session (so signals reach it and only it)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = ROOT
    popen: subprocess.Popen | None = None

    def start(self) -> Process:
        if self.running:
            return self
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        """The started process's id (its group's too: it leads its own session)."""
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole process group: the crash of a host, not a clean stop."""
        if self.popen is not None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(10)

    def stop(self, timeout: float = 10) -> None:
        if self.popen is None or not self.running:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ProcessGroup:
    """Owns every process of a test session and a scratch folder for their files."""

    def __init__(self, prefix: str = "chatsys-test-"):
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.processes: list[Process] = []
        self.other_dirs: list[Path] = []  # folders of another user's (PostgreSQL's), removed too

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> Process:
        full_env = {**os.environ, **env}
        process = Process(name, argv, full_env, self.dir / f"{name}.log", cwd).start()
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout=5)
        for folder in [self.dir, *self.other_dirs]:
            shutil.rmtree(folder, ignore_errors=True)


def script_var(group: ProcessGroup, prefix: str = "chatsys-test-var-") -> Path:
    """A fresh CHATSYS_VAR for a stack the scripts start, removed with the group. With
    FERRETDB_HANDLER=postgresql, root runs PostgreSQL as the user postgres, which must pass
    through this folder: pytest's tmp_path lies under a folder of root's alone (mode 700)."""
    var = Path(tempfile.mkdtemp(prefix=prefix))
    var.chmod(0o711)
    group.other_dirs.append(var)
    return var


def ferretdb_binary() -> Path:
    """The patched FerretDB build; scripts/ferretdb.sh builds it once and names it."""
    path = subprocess.run(
        [str(ROOT / "scripts" / "ferretdb.sh"), "path"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return Path(path)


@dataclass
class Database:
    process: Process
    port: int
    name: str = "chatsys_test"

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{self.name}"

    def stop(self) -> None:
        self.process.stop()
        wait_until(lambda: not port_open(self.port), 10, "FerretDB to stop")

    def start(self) -> None:
        self.process.start()
        wait_until(lambda: port_open(self.port), 30, "FerretDB to listen")


# FerretDB's backend, as scripts/lib/common.sh names it: sqlite (the default) or postgresql.
FERRETDB_HANDLER = os.environ.get("FERRETDB_HANDLER", "sqlite")
# Go's collector target for FerretDB, as scripts/lib/common.sh gives it (FERRETDB_GOGC).
FERRETDB_GOGC = os.environ.get("FERRETDB_GOGC", "400")


def ferretdb_flags(data: Path, port: int, debug_addr: str, handler: str = "sqlite") -> list[str]:
    """FerretDB's command line as scripts/ferretdb.sh, the systemd unit and the images give it
    (tests/fast/test_ferretdb_flags.py holds them together): SQLite under `data`, loopback.
    With the postgresql handler, the URL goes in FerretDB's environment, as the script puts it."""
    backend = (
        ["--handler=sqlite", f"--sqlite-url=file:{data}/data/"] if handler == "sqlite" else ["--handler=postgresql"]
    )
    return [
        *backend,
        f"--state-dir={data}/state",
        f"--listen-addr=127.0.0.1:{port}",
        f"--debug-addr={debug_addr}",
        "--telemetry=disable",
        "--log-level=warn",
    ]


@dataclass
class Postgres:
    """A private PostgreSQL cluster for FerretDB's postgresql handler, as scripts/ferretdb.sh
    makes one: superuser `ferretdb` with a password, TCP on loopback only."""

    process: Process
    port: int
    password: str

    @property
    def url(self) -> str:
        return f"postgres://ferretdb:{self.password}@127.0.0.1:{self.port}/postgres"


def postgres_bin() -> Path:
    """Debian's PostgreSQL server programs, the newest major installed (scripts/lib/common.sh's POSTGRES_BIN)."""
    configured = os.environ.get("POSTGRES_BIN")
    found = (
        [Path(configured)]
        if configured
        else sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    )
    if not found or not (found[-1] / "initdb").exists():
        import pytest

        pytest.fail("PostgreSQL's server is not installed; scripts/setup.sh installs it (Debian: postgresql)")
    return found[-1]


def as_postgres() -> list[str]:
    """The prefix that runs a PostgreSQL server program as scripts/ferretdb.sh does: as
    Debian's system user postgres when we are root (PostgreSQL refuses to run as root)."""
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] if os.geteuid() == 0 else []


def start_postgres(group: ProcessGroup) -> Postgres:
    """A fresh cluster on a free port. PostgreSQL refuses to run as root, so root runs it as
    Debian's system user postgres, in a folder of that user's."""
    bin_dir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="chatsys-test-postgresql-"))
    group.other_dirs.append(folder)
    prefix = as_postgres()
    if prefix:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
    password = secrets.token_hex(16)
    password_file = folder / "password"
    password_file.write_text(password + "\n")
    if prefix:
        os.chown(password_file, account.pw_uid, account.pw_gid)
    cluster = folder / "data"
    subprocess.run(
        [
            *prefix,
            str(bin_dir / "initdb"),
            f"--pgdata={cluster}",
            "--username=ferretdb",
            f"--pwfile={password_file}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
    )
    password_file.unlink()
    port = free_port()
    argv = [
        *prefix,
        str(bin_dir / "postgres"),
        f"-D{cluster}",
        f"-p{port}",
        "-clisten_addresses=127.0.0.1",
        "-cunix_socket_directories=",
    ]
    postgres = Postgres(group.spawn("postgresql", argv, {}), port, password)
    wait_until(lambda: port_open(port), 60, "PostgreSQL to listen")
    return postgres


def start_ferretdb(
    group: ProcessGroup,
    name: str = "ferretdb",
    debug_port: int | None = None,
    handler: str = FERRETDB_HANDLER,
    postgres: Postgres | None = None,
    migrated: bool = True,
) -> Database:
    """FerretDB on free ports; with `debug_port`, its metrics answer on that port. With the
    postgresql handler, on `postgres`, or else on a cluster of its own. Its database is
    migrated (`migrate`), as every deployment does before the services start, unless told not."""
    port = free_port()
    data = group.dir / name
    (data / "data").mkdir(parents=True)
    (data / "state").mkdir()
    debug_addr = f"127.0.0.1:{debug_port}" if debug_port else "-"
    env = {"GOGC": FERRETDB_GOGC}
    if handler == "postgresql":
        env["FERRETDB_POSTGRESQL_URL"] = (postgres or start_postgres(group)).url
    argv = [str(ferretdb_binary()), *ferretdb_flags(data, port, debug_addr, handler)]
    database = Database(group.spawn(name, argv, env), port)
    wait_until(lambda: port_open(port), 30, "FerretDB to listen")
    if migrated:
        migrate(database.uri)
    return database


def migrate(uri: str, wait_seconds: float = 30) -> subprocess.CompletedProcess:
    """Run the migration command (`python -m service_kit.migrate`) on the database of `uri`;
    fails with its error line unless it succeeds."""
    done = run_migrate(uri, wait_seconds)
    if done.returncode != 0:
        raise RuntimeError(f"the migration command failed: {done.stderr.strip()}")
    return done


def run_migrate(uri: str, wait_seconds: float = 30) -> subprocess.CompletedProcess:
    """The migration command's run on the database of `uri`, whatever its outcome."""
    return subprocess.run(
        [str(VENV_BIN / "python"), "-m", "service_kit.migrate", "--wait", str(wait_seconds)],
        env={**os.environ, "MONGO_URI": uri},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def gunicorn_argv(module: str) -> list[str]:
    """The command line the scripts, systemd units and containers all use."""
    return [str(VENV_BIN / "gunicorn"), "-c", "conf/gunicorn.conf.py", module]


@dataclass
class Service:
    process: Process
    port: int
    service: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Service:
        self.process.start()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        try:
            wait_until(lambda: http_ok(self.url + "/health"), timeout, f"{self.service}@{self.port}")
        except TimeoutError:
            raise TimeoutError(f"{self.service}@{self.port} did not start:\n{self.process.log_tail()}") from None

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()


def start_service(group: ProcessGroup, service: str, env: dict[str, str], port: int | None = None) -> Service:
    port = port or free_port()
    settings = {"PORT": str(port), "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "8", **env}
    process = group.spawn(f"{service}-{port}", gunicorn_argv(f"{service}_service.wsgi:app"), settings)
    return Service(process, port, service).start()


@dataclass
class LoadBalancer:
    process: Process
    port: int
    stats_port: int
    socket_path: Path
    env: dict[str, str] = field(default_factory=dict)
    login_port: int = 0
    profile_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def login_url(self) -> str:
        return f"http://127.0.0.1:{self.login_port}"

    @property
    def profile_url(self) -> str:
        return f"http://127.0.0.1:{self.profile_port}"

    def command(self, line: str) -> str:
        return haproxy_runtime.command(str(self.socket_path), line)

    def server_states(self, backend: str = "chat_servers") -> dict[str, str]:
        return haproxy_stats.server_states(self.command("show stat"), backend)

    def serving_pid(self) -> int | None:
        """The process that answers the runtime socket (the worker, in master-worker mode);
        None while the socket is being handed over."""
        try:
            found = re.search(r"^Pid: (\d+)$", self.command("show info"), re.MULTILINE)
        except OSError:
            return None
        return int(found.group(1)) if found else None

    def can_hand_over_tables(self) -> bool:
        """Whether the serving process would hand its rate tables to a successor: it does once
        it has learnt its own (from its predecessor, or for 5 s after a cold start when none
        came), flag PEERS_F_RESYNC_REMOTE (0x2) of its peers section. With no such section
        (a configuration without peers) it hands nothing over, and there is nothing to wait for."""
        try:
            peers = self.command("show peers")
        except OSError:
            return False
        found = re.search(r" id=edge_tables .*?flags=0x([0-9a-f]+)", peers)
        return found is None or int(found.group(1), 16) & 0x2 != 0

    def reload(self) -> None:
        """A master-worker reload as `systemctl reload haproxy` makes it (SIGUSR2 to the
        master, which starts a new worker and lets the old one finish; needs
        `start_haproxy(master_worker=True)`), once the serving process can hand its tables
        over. Returns once the new worker answers and the old one has left."""
        assert self.process.popen is not None
        wait_until(self.can_hand_over_tables, 30, "HAProxy to be ready to hand its tables over")
        old = self.serving_pid()
        os.kill(self.process.popen.pid, signal.SIGUSR2)
        wait_until(lambda: self.serving_pid() not in (None, old), 30, "a new HAProxy worker")
        wait_until(lambda: old is None or not pid_exists(old), 30, "the old HAProxy worker to leave")


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# The edge limits of conf/haproxy/haproxy.cfg, lifted for test stacks, whose clients all
# come from 127.0.0.1 and register hundreds of users; the tests of the limits set them.
UNLIMITED_EDGE = {
    "HAPROXY_AUTH_RATE": "1000000",
    "HAPROXY_POST_RATE": "1000000",
    "HAPROXY_ROOM_RATE": "1000000",
    "HAPROXY_ROOMS_PER_ADDRESS": "1000000",
}


def start_haproxy(
    group: ProcessGroup,
    chat_ports: list[int],
    extra_env: dict[str, str] | None = None,
    login: Service | None = None,
    profile: Service | None = None,
    master_worker: bool = False,
) -> LoadBalancer:
    """HAProxy in front of the chat servers and, when given, the login and profile services,
    on free ports, with the edge limits lifted unless `extra_env` sets them; `master_worker`:
    a master and its worker, as systemd and the Docker image run it, so it can `reload()`.

    Ready means its runtime socket answers, not that its file exists: a port another
    process took between `free_port()` and HAProxy's bind makes HAProxy exit at once and
    leave the socket's file behind. Then it starts again on other ports, at most three
    times."""
    for attempt in range(3):
        balancer = _spawn_haproxy(group, chat_ports, extra_env, login, profile, master_worker)
        process = balancer.process

        def answering(balancer=balancer, process=process) -> bool:
            if not process.running:
                raise _HAProxyExited(process.log_tail())
            return port_open(balancer.port) and balancer.serving_pid() is not None

        try:
            wait_until(answering, 10, "HAProxy to listen and answer on its runtime socket")
        except _HAProxyExited as exited:
            if "cannot bind" not in str(exited) or attempt == 2:
                raise RuntimeError(f"HAProxy exited at its start:\n{exited}") from None
            continue
        break
    for name, service in (("login", login), ("profile", profile)):
        if service is not None:
            wait_until(
                lambda name=name: balancer.server_states(name).get(name) == "UP", 15, f"HAProxy to see {name} up"
            )
    return balancer


class _HAProxyExited(Exception):
    """HAProxy ended before it answered; the message is the end of its log."""


def _spawn_haproxy(
    group: ProcessGroup,
    chat_ports: list[int],
    extra_env: dict[str, str] | None,
    login: Service | None,
    profile: Service | None,
    master_worker: bool,
) -> LoadBalancer:
    port, stats_port, login_port, profile_port = free_port(), free_port(), free_port(), free_port()
    socket_path = group.dir / f"haproxy-{port}.sock"
    env = {
        "HAPROXY_BIND": "127.0.0.1",
        "HAPROXY_PORT": str(port),
        "HAPROXY_STATS_BIND": "127.0.0.1",
        "HAPROXY_STATS_PORT": str(stats_port),
        "HAPROXY_RUNTIME_SOCKET": str(socket_path),
        "HAPROXY_LOGIN_PORT": str(login_port),
        "HAPROXY_PROFILE_PORT": str(profile_port),
        "HAPROXY_PEER_PORT": str(free_port()),
        **UNLIMITED_EDGE,
    }
    for index, chat_port in enumerate(chat_ports, start=1):
        env[f"CHAT_SERVER_{index}"] = f"127.0.0.1:{chat_port}"
    if login is not None:
        env["LOGIN_SERVER"] = f"127.0.0.1:{login.port}"
    if profile is not None:
        env["PROFILE_SERVER"] = f"127.0.0.1:{profile.port}"
    env.update(extra_env or {})
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    mode = ["-W"] if master_worker else []
    argv = [haproxy, *mode, "-db", "-f", str(ROOT / "conf/haproxy/haproxy.cfg")]
    process = group.spawn(f"haproxy-{port}", argv, env)
    return LoadBalancer(process, port, stats_port, socket_path, env, login_port, profile_port)
