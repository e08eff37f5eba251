"""Boot persistence with systemd: the units systemd accepts, the install the script stages, and
each unit's own command line serving requests.

systemd is not init on a test machine, so nothing here goes through systemctl start: the units
are checked with systemd-analyze, the install is staged with --root, and the ExecStart= lines
are run directly with the environment systemd would give them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pymongo
import pytest
import requests

from tests.lib import harness

pytestmark = pytest.mark.local

INSTALLER = harness.ROOT / "scripts" / "install-systemd.sh"
PREFIX = "/opt/chatsys"
SERVICE_UNITS = [
    "login.service",
    "profile.service",
    "chat@.service",
    "chatsys-ferretdb.service",
    "chatsys-migrate.service",
]
UNITS = ["chatsys.target", *SERVICE_UNITS]
CHAT_INSTANCES = ["chat@4000.service", "chat@4001.service", "chat@4002.service"]
DEBIAN_HAPROXY_UNIT = Path("/lib/systemd/system/haproxy.service")
DEBIAN_PROMETHEUS_UNITS = [
    Path("/lib/systemd/system/prometheus.service"),
    Path("/lib/systemd/system/prometheus-node-exporter.service"),
]
DROPIN_UNITS = ["haproxy.service", "prometheus.service", "prometheus-node-exporter.service"]


@dataclass
class StagedInstall:
    root: Path

    @property
    def prefix(self) -> Path:
        return self.root / PREFIX.lstrip("/")

    @property
    def unit_dir(self) -> Path:
        return self.root / "etc/systemd/system"

    @property
    def env_file(self) -> Path:
        return self.root / "etc/chatsys/chatsys.env"

    def path(self, system_path: str) -> Path:
        """Where a path of the installed system lies in the staged tree."""
        return self.root / system_path.lstrip("/")


def run_installer(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", str(INSTALLER), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"install-systemd.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> StagedInstall:
    """One staged install per session: it builds a virtualenv, which takes a while."""
    root = tmp_path_factory.mktemp("systemd-root")
    run_installer("--root", str(root))
    return StagedInstall(root)


# --- reading unit files the way systemd does (the parts these units use) ---------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    """`Key` -> values in order, over all sections (these units repeat no key across sections)."""
    settings: dict[str, list[str]] = {}
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;" or line.startswith("[")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        key, _, value = (logical + line).partition("=")
        logical = ""
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def expand_specifiers(text: str, instance: str) -> str:
    return re.sub(r"%[%iI]", lambda match: "%" if match[0] == "%%" else instance, text)


def read_environment_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match:
            value = match[2].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[match[1]] = value
    return values


def unit_environment(staged: StagedInstall, settings: dict[str, list[str]], instance: str) -> dict[str, str]:
    """Environment= first, then EnvironmentFile= on top: systemd lets the files win."""
    environment = {}
    for line in settings.get("Environment", []):
        for assignment in shlex.split(expand_specifiers(line, instance)):
            key, _, value = assignment.partition("=")
            environment[key] = value
    for name in settings.get("EnvironmentFile", []):
        path = staged.path(name.lstrip("-"))
        if path.exists() or not name.startswith("-"):
            environment.update(read_environment_file(path))
    return environment


def command_line(exec_start: str, environment: dict[str, str], instance: str) -> list[str]:
    """ExecStart= as systemd runs it: specifiers, then ${VAR} inside words, $VAR as words and $$."""
    argv = []
    for word in shlex.split(expand_specifiers(exec_start, instance)):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv.extend(environment.get(whole[1], "").split())
        else:
            # "$$" is a literal "$" for the program (a shell's variable, say).
            argv.append(
                re.sub(
                    r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                    lambda match: "$" if match[0] == "$$" else environment.get(match[1], ""),
                    word,
                )
            )
    argv[0] = argv[0].lstrip("-@:+!")
    return argv


def in_staged_tree(staged: StagedInstall, word: str) -> str:
    """The installed system's paths (prefix, state directory) moved into the staged tree."""
    for system_path in (PREFIX, "/var/lib/chatsys"):
        word = re.sub(rf"(^|(?<=[=:])){re.escape(system_path)}(?=/|$)", str(staged.path(system_path)), word)
    return word


def spawn_unit(processes, staged: StagedInstall, unit: str, instance: str, overrides: dict[str, str]):
    settings = unit_settings(staged.unit_dir / unit)
    environment = {**unit_environment(staged, settings, instance), **overrides}
    (exec_start,) = settings["ExecStart"]
    argv = [in_staged_tree(staged, word) for word in command_line(exec_start, environment, instance)]
    cwd = Path(in_staged_tree(staged, settings.get("WorkingDirectory", ["/"])[0]))
    name = unit.replace("@.service", f"@{instance}").removesuffix(".service")
    return processes.spawn(f"unit-{name}", argv, environment, cwd=cwd)


def wait_ready(process, port: int) -> requests.Response:
    url = f"http://127.0.0.1:{port}/ready"
    try:
        harness.wait_until(lambda: harness.http_ok(url), 60, f"{process.name} to be ready")
    except TimeoutError:
        raise AssertionError(f"{process.name} never answered 200 on /ready:\n{process.log_tail()}") from None
    return requests.get(url, timeout=5)


# --- systemd-analyze ------------------------------------------------------------------------


def systemd_analyze(staged: StagedInstall, *args: str) -> subprocess.CompletedProcess:
    """systemd-analyze on the staged units, with the staged prefix seen at its real path.

    verify insists that ExecStart binaries exist, and --root would also hide the system's own
    units, so the staged prefix is bind-mounted over the real folder in a private mount
    namespace. Where that is not allowed, copies of the units pointing into the staged tree
    are checked instead.
    """
    harness.require_tool("systemd-analyze")
    mount_point = "/" + PREFIX.strip("/").split("/")[0]
    with_prefix_mounted = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$1" "$2" && shift 2 && exec "$@"',
        "sh",
        str(staged.path(mount_point)),
        mount_point,
    ]
    if (
        shutil.which("unshare")
        and Path(mount_point).is_dir()
        and subprocess.run([*with_prefix_mounted, "true"], capture_output=True, timeout=30).returncode == 0
    ):
        return subprocess.run(
            [*with_prefix_mounted, "systemd-analyze", *args], capture_output=True, text=True, timeout=120
        )
    rewritten = [arg.replace(str(staged.unit_dir), str(pointed_units(staged))) for arg in args]
    return subprocess.run(["systemd-analyze", *rewritten], capture_output=True, text=True, timeout=120)


def pointed_units(staged: StagedInstall) -> Path:
    folder = staged.root.parent / (staged.root.name + "-units-pointed")
    if not folder.exists():
        shutil.copytree(staged.unit_dir, folder, symlinks=True)
        for unit in UNITS:
            path = folder / unit
            path.write_text(path.read_text().replace(PREFIX, str(staged.prefix)))
    return folder


def test_systemd_accepts_every_unit_and_chat_instance_without_warnings(staged):
    units = [str(staged.unit_dir / unit) for unit in UNITS if unit != "chat@.service"]
    instances = [f"{staged.unit_dir / 'chat@.service'}:{instance}" for instance in CHAT_INSTANCES]
    # Debian's HAProxy unit is verified together with the chatsys drop-in found next to our units.
    # So are Debian's Prometheus and node exporter units with theirs.
    debian = [str(path) for path in (DEBIAN_HAPROXY_UNIT, *DEBIAN_PROMETHEUS_UNITS) if path.exists()]
    result = systemd_analyze(staged, "verify", "--man=no", *units, *instances, *debian)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        f"systemd-analyze verify:\n{result.stdout}{result.stderr}"
    )


@pytest.mark.parametrize(
    "unit",
    [
        "login.service",
        "profile.service",
        "chat@.service:chat@4001.service",
        "chatsys-ferretdb.service",
        "chatsys-migrate.service",
    ],
)
def test_each_service_keeps_its_sandbox(staged, unit):
    # --threshold is on the 0-100 scale of the printed 0.0-10.0 exposure: 20 means at most 2.0 "OK".
    file, _, alias = unit.partition(":")
    target = str(staged.unit_dir / file) + (f":{alias}" if alias else "")
    result = systemd_analyze(staged, "security", "--offline=true", "--threshold=20", "--no-pager", target)
    assert result.returncode == 0, f"exposure above 2.0:\n{result.stdout}{result.stderr}"


# --- the staged tree --------------------------------------------------------------------------


def test_staged_install_has_units_config_and_boot_link(staged):
    for unit in UNITS:
        text = (staged.unit_dir / unit).read_text()
        assert "@PREFIX@" not in text, unit
    for unit in DROPIN_UNITS:
        assert "@PREFIX@" not in (staged.unit_dir / f"{unit}.d/chatsys.conf").read_text(), unit
    # One sandbox for every service, as a drop-in of each (conf/systemd/chatsys-sandbox.conf).
    sandbox = (harness.ROOT / "conf/systemd/chatsys-sandbox.conf").read_text()
    for unit in SERVICE_UNITS:
        assert (staged.unit_dir / f"{unit}.d/chatsys-sandbox.conf").read_text() == sandbox, unit
        assert "NoNewPrivileges" not in (staged.unit_dir / unit).read_text(), f"{unit} repeats the sandbox"
    for unit in ("login.service", "profile.service", "chat@.service"):
        settings = unit_settings(staged.unit_dir / unit)
        assert settings["ExecStart"][0].startswith(f"{PREFIX}/.venv/bin/gunicorn -c conf/gunicorn.conf.py ")
        assert settings["WorkingDirectory"] == [PREFIX]
        assert settings["User"] == ["chatsys"]
        assert settings["EnvironmentFile"] == ["/etc/chatsys/chatsys.env"]
        assert settings["Restart"] == ["on-failure"]
    assert "PORT=%i" in unit_settings(staged.unit_dir / "chat@.service")["Environment"]
    boot_link = staged.unit_dir / "multi-user.target.wants" / "chatsys.target"
    assert boot_link.is_symlink() and os.readlink(boot_link) == "/etc/systemd/system/chatsys.target"
    wanted = wanted_by_target(staged)
    assert {"login.service", "profile.service", "chatsys-ferretdb.service", "chatsys-migrate.service"} <= wanted
    assert {"haproxy.service", "prometheus.service", "prometheus-node-exporter.service"} <= wanted
    # The chat servers of CHAT_PORTS' default, and no other.
    assert {unit for unit in wanted if unit.startswith("chat@")} == set(CHAT_INSTANCES)
    # Every service needs the migration, and starts after it.
    for unit in ("login.service", "profile.service", "chat@.service"):
        settings = unit_settings(staged.unit_dir / unit)
        assert settings["Requires"] == ["chatsys-migrate.service"], unit
        assert "chatsys-migrate.service" in " ".join(settings["After"]).split(), unit
    assert unit_settings(staged.unit_dir / "chatsys-migrate.service")["Type"] == ["oneshot"]

    mode = stat.S_IMODE(staged.env_file.stat().st_mode)
    assert mode & 0o137 == 0, f"chatsys.env is {oct(mode)}; secrets need 0640 or stricter"
    # A PORT in the file would win over every unit's own port (chat@%i included).
    assert "PORT" not in read_environment_file(staged.env_file)

    assert (staged.prefix / "service_kit").is_dir() and (staged.prefix / "conf/gunicorn.conf.py").is_file()
    for left_out in (".git", "var", "results", "tests", "tools", "patches", "jmeter", "docs/results"):
        assert not (staged.prefix / left_out).exists(), f"{left_out} was copied into the release"
    # The virtualenv is built for the release, not the checkout's development one copied over.
    assert (staged.prefix / ".venv/bin/gunicorn").exists() and not (staged.prefix / ".venv/bin/pytest").exists()
    ferretdb = staged.prefix / "bin/ferretdb"
    assert "v1.24.2" in subprocess.run([str(ferretdb), "--version"], capture_output=True, text=True, timeout=30).stdout


def wanted_by_target(staged: StagedInstall) -> set[str]:
    """What chatsys.target wants: its Wants= lines and the links enabled into chatsys.target.wants/."""
    wanted = set(" ".join(unit_settings(staged.unit_dir / "chatsys.target")["Wants"]).split())
    links = staged.unit_dir / "chatsys.target.wants"
    return wanted | ({link.name for link in links.iterdir()} if links.is_dir() else set())


def chat_servers_of(staged: StagedInstall) -> dict[str, str]:
    return {key: value for key, value in read_environment_file(staged.env_file).items() if key.startswith("CHAT_")}


def test_the_installer_follows_chat_ports_for_the_chat_units_and_haproxy(staged, tmp_path):
    """CHAT_PORTS sets the chat@PORT units chatsys.target wants and HAProxy's CHAT_SERVER_n,
    exactly; a later install without it keeps them; systemd accepts the target with them."""
    copy = StagedInstall(tmp_path / "root")
    shutil.copytree(staged.root, copy.root, symlinks=True)
    assert chat_servers_of(copy) == {
        "CHAT_PORTS": "4000 4001 4002",
        **{f"CHAT_SERVER_{n}": f"127.0.0.1:{4000 + n - 1}" for n in (1, 2, 3)},
    }
    with copy.env_file.open("a") as env_file:
        env_file.write("TOKEN_TTL_SECONDS=600\n")  # a local setting, kept

    def install(ports: str | None) -> None:
        env = {key: value for key, value in os.environ.items() if key != "CHAT_PORTS"}
        if ports is not None:
            env["CHAT_PORTS"] = ports
        result = subprocess.run(
            ["bash", str(INSTALLER), "--root", str(copy.root)], env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"install-systemd.sh with CHAT_PORTS={ports}:\n{result.stdout}\n{result.stderr}"

    install("4000 4001 4002 4003 4010")
    assert {unit for unit in wanted_by_target(copy) if unit.startswith("chat@")} == {
        f"chat@{port}.service" for port in (4000, 4001, 4002, 4003, 4010)
    }
    assert chat_servers_of(copy) == {
        "CHAT_PORTS": "4000 4001 4002 4003 4010",
        **{f"CHAT_SERVER_{n}": f"127.0.0.1:{port}" for n, port in enumerate((4000, 4001, 4002, 4003, 4010), 1)},
    }
    assert read_environment_file(copy.env_file)["TOKEN_TTL_SECONDS"] == "600"
    result = systemd_analyze(copy, "verify", "--man=no", str(copy.unit_dir / "chatsys.target"))
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        f"systemd-analyze verify:\n{result.stdout}{result.stderr}"
    )

    install("4001")
    assert {unit for unit in wanted_by_target(copy) if unit.startswith("chat@")} == {"chat@4001.service"}
    assert chat_servers_of(copy) == {"CHAT_PORTS": "4001", "CHAT_SERVER_1": "127.0.0.1:4001"}
    install(None)  # no CHAT_PORTS: the settings file's are kept
    assert chat_servers_of(copy) == {"CHAT_PORTS": "4001", "CHAT_SERVER_1": "127.0.0.1:4001"}
    assert {unit for unit in wanted_by_target(copy) if unit.startswith("chat@")} == {"chat@4001.service"}
    assert read_environment_file(copy.env_file)["TOKEN_TTL_SECONDS"] == "600"


def test_the_installer_refuses_chat_ports_it_cannot_serve(tmp_path):
    for ports in ("", "4000 4000", "4000 http", " ".join(str(4000 + n) for n in range(11))):
        result = subprocess.run(
            ["bash", str(INSTALLER), "--root", str(tmp_path / "root")],
            env={**os.environ, "CHAT_PORTS": ports or " "},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0 and "CHAT_PORTS" in result.stderr, (ports, result.stderr)
        assert not (tmp_path / "root/opt").exists(), "refused before anything was installed"


def test_staged_virtualenv_runs_gunicorn(staged):
    gunicorn = staged.prefix / ".venv/bin/gunicorn"
    result = subprocess.run([str(gunicorn), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "gunicorn" in (result.stdout + result.stderr).lower(), result


def test_haproxy_gets_the_project_config_and_its_environment(staged):
    installed = staged.path("/etc/chatsys/haproxy.cfg")
    assert installed.read_text() == (harness.ROOT / "conf/haproxy/haproxy.cfg").read_text()
    assert staged.path("/etc/chatsys/web.lua").read_text() == (harness.ROOT / "conf/haproxy/web.lua").read_text()
    dropin = unit_settings(staged.unit_dir / "haproxy.service.d/chatsys.conf")
    assert dropin["EnvironmentFile"] == ["/etc/chatsys/chatsys.env"]
    assert "CONFIG=/etc/chatsys/haproxy.cfg" in dropin["Environment"]
    # Debian's unit starts `haproxy -f $CONFIG`: the drop-in's CONFIG is what it reads.
    if DEBIAN_HAPROXY_UNIT.exists():
        assert "-f $CONFIG" in unit_settings(DEBIAN_HAPROXY_UNIT)["ExecStart"][0]
    # The web client is the release's web/, which the staged tree holds below its root.
    assert f"HAPROXY_WEB_ROOT={PREFIX}/web" in dropin["Environment"]
    haproxy = harness.require_tool("haproxy", "/usr/sbin/haproxy")
    environment = {**os.environ, **unit_environment(staged, dropin, "")}
    environment["HAPROXY_WEB_ROOT"] = str(staged.path(environment["HAPROXY_WEB_ROOT"]))
    result = subprocess.run(
        [haproxy, "-c", "-f", str(installed)], env=environment, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_second_install_changes_nothing_and_keeps_local_settings(staged):
    with staged.env_file.open("a") as env_file:
        env_file.write("# a local edit the installer must keep\n")

    def snapshot():
        files = [staged.env_file, *sorted(staged.unit_dir.rglob("*"))]
        return {
            str(path): os.readlink(path) if path.is_symlink() else path.read_bytes()
            for path in files
            if path.is_file() or path.is_symlink()
        }

    before = snapshot()
    run_installer("--root", str(staged.root))
    assert snapshot() == before
    assert (staged.prefix / ".venv/bin/gunicorn").exists()


def test_uninstall_removes_a_staged_install(staged, tmp_path):
    # A copy, so the other tests keep theirs (and no second virtualenv has to be built).
    copy = tmp_path / "root"
    shutil.copytree(staged.root, copy, symlinks=True)
    run_installer("--root", str(copy), "--uninstall")
    # What --uninstall keeps: the settings, and the data if a database test left some.
    left = sorted(str(path.relative_to(copy)) for path in copy.rglob("*") if path.parts[len(copy.parts)] != "var")
    assert left == ["etc", "etc/chatsys", "etc/chatsys/chatsys.env"], left
    run_installer("--root", str(copy), "--uninstall", "--purge")
    assert list(copy.iterdir()) == []


# --- the units' own command lines -------------------------------------------------------------


def test_unit_command_lines_serve_ready_with_their_environment(staged, processes, database):
    # Each unit also serves its metrics at its port + METRICS_PORT_OFFSET (chatsys.env), so
    # those ports must be free and in range too.
    offset = int(read_environment_file(staged.env_file)["METRICS_PORT_OFFSET"])
    login_port = harness.free_port_block(3, mirror=offset)
    profile_port, chat_port = login_port + 1, login_port + 2
    login_url = f"http://127.0.0.1:{login_port}"
    common = {"MONGO_URI": database.uri, "LOGIN_URL": login_url}
    login = spawn_unit(processes, staged, "login.service", "", {**common, "PORT": str(login_port)})
    profile = spawn_unit(processes, staged, "profile.service", "", {**common, "PORT": str(profile_port)})
    # The instance is the port, as in chat@4001: PORT comes from Environment=PORT=%i.
    chat = spawn_unit(processes, staged, "chat@.service", str(chat_port), common)
    try:
        for process, port, instance in (
            (login, login_port, "login"),
            (profile, profile_port, "profile"),
            (chat, chat_port, "chat"),
        ):
            answer = wait_ready(process, port)
            assert answer.status_code == 200
            assert answer.headers["X-Instance"] == f"{instance}@{port}"
    finally:
        for process in (chat, profile, login):
            process.stop()


def test_migration_unit_command_line_migrates_the_database(staged, processes):
    database = harness.start_ferretdb(processes, name="ferretdb-unit-migrate", migrated=False)
    migration = spawn_unit(processes, staged, "chatsys-migrate.service", "", {"MONGO_URI": database.uri})
    harness.wait_until(lambda: not migration.running, 120, "the migration unit's command to finish")
    assert migration.popen is not None and migration.popen.returncode == 0, migration.log_tail()
    with pymongo.MongoClient(database.uri) as client:
        db = client.get_default_database()
        assert db.schema_marks.find_one({"_id": "schema"}) is not None
        assert any(index.get("unique") for index in db.users.index_information().values())


def test_database_unit_command_line_serves_mongodb(staged, processes):
    port, metrics_port = harness.free_port(), harness.free_port()
    for folder in ("data", "state"):  # what StateDirectory= creates before systemd starts it
        staged.path(f"/var/lib/chatsys/ferretdb/{folder}").mkdir(parents=True, exist_ok=True)
    ferretdb = spawn_unit(
        processes,
        staged,
        "chatsys-ferretdb.service",
        "",
        {"MONGO_PORT": str(port), "FERRETDB_METRICS_PORT": str(metrics_port)},
    )
    try:
        harness.wait_until(lambda: harness.port_open(port), 30, "FerretDB from its unit to listen")
        # Its metrics for Prometheus, on loopback.
        assert requests.get(f"http://127.0.0.1:{metrics_port}/debug/metrics", timeout=10).status_code == 200
        with pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=10000) as client:
            assert client.admin.command("ping")["ok"] == 1
            client.chatsys_unit_test.probe.insert_one({"written": True})
        assert any(staged.path("/var/lib/chatsys/ferretdb/data").iterdir()), "FerretDB wrote no data file"
    finally:
        ferretdb.stop()


def dropin_command(staged: StagedInstall, setting: str, settings: dict, environment: dict[str, str]) -> list[str]:
    """The drop-in's last (in effect) line of SETTING, as systemd runs it, in the staged tree."""
    line = [value for value in settings[setting] if value][-1]
    return [in_staged_tree(staged, word) for word in command_line(line, environment, "")]


def test_prometheus_and_node_exporter_dropins_scrape_every_part_of_the_host_with_the_stats_password(staged, processes):
    harness.require_tool("prometheus")
    harness.require_tool("prometheus-node-exporter")
    prometheus_port, node_port = harness.free_port(), harness.free_port()
    overrides = {
        "PROMETHEUS_PORT": str(prometheus_port),
        "NODE_EXPORTER_PORT": str(node_port),
        "HAPROXY_STATS_USER": "observer",
        "HAPROXY_STATS_PASSWORD": "stats password",
    }
    node_settings = unit_settings(staged.unit_dir / "prometheus-node-exporter.service.d/chatsys.conf")
    node_environment = {**unit_environment(staged, node_settings, ""), **overrides}
    settings = unit_settings(staged.unit_dir / "prometheus.service.d/chatsys.conf")
    environment = {**unit_environment(staged, settings, ""), **overrides}
    assert settings["ExecStart"][0] == "", "the drop-in replaces Debian's command line"
    # ExecCondition=: PROMETHEUS=off in chatsys.env keeps both stopped.
    for unit_settings_of, unit_environment_of in ((settings, environment), (node_settings, node_environment)):
        condition = dropin_command(staged, "ExecCondition", unit_settings_of, unit_environment_of)
        assert subprocess.run(condition, env=unit_environment_of, timeout=10).returncode == 0
        assert subprocess.run(condition, env={**unit_environment_of, "PROMETHEUS": "off"}, timeout=10).returncode != 0
    staged.path("/var/lib/chatsys/prometheus").mkdir(parents=True, exist_ok=True)  # StateDirectory=
    configure = subprocess.run(
        dropin_command(staged, "ExecStartPre", settings, environment),
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert configure.returncode == 0, configure.stderr
    config = staged.path("/var/lib/chatsys/prometheus/config")
    assert (config / "haproxy-stats-password").read_text() == "stats password"
    assert stat.S_IMODE((config / "haproxy-stats-password").stat().st_mode) == 0o600
    node = processes.spawn(
        "unit-node-exporter", dropin_command(staged, "ExecStart", node_settings, node_environment), node_environment
    )
    prometheus = processes.spawn(
        "unit-prometheus", dropin_command(staged, "ExecStart", settings, environment), environment
    )
    try:
        url = f"http://127.0.0.1:{prometheus_port}"
        harness.wait_until(lambda: harness.http_ok(f"{url}/-/ready"), 60, "Prometheus from its drop-in to be ready")

        def targets() -> list[dict]:
            return requests.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]

        def node_and_itself_up() -> bool:
            health = {target["labels"]["job"]: target["health"] for target in targets()}
            return health.get("node") == "up" and health.get("prometheus") == "up"

        # Only the node exporter and Prometheus run here; the rest are named as systemd runs them.
        harness.wait_until(node_and_itself_up, 60, "Prometheus to scrape the node exporter and itself")
        found = {
            (target["labels"]["job"], target["labels"].get("server", "")): target["scrapeUrl"] for target in targets()
        }
        assert found == {
            ("prometheus", ""): f"{url}/metrics",
            ("node", ""): f"http://127.0.0.1:{node_port}/metrics",
            ("haproxy", ""): "http://127.0.0.1:8404/metrics",
            ("ferretdb", ""): "http://127.0.0.1:8088/debug/metrics",
            ("services", "login@4101"): "http://127.0.0.1:9101/metrics",
            ("services", "profile@4201"): "http://127.0.0.1:9201/metrics",
            ("services", "chat@4000"): "http://127.0.0.1:9000/metrics",
            ("services", "chat@4001"): "http://127.0.0.1:9001/metrics",
            ("services", "chat@4002"): "http://127.0.0.1:9002/metrics",
        }
    finally:
        prometheus.stop()
        node.stop()
