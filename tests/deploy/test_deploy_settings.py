"""One home for the deployment's shape: deploy/settings/deploy.env holds every image, port,
resource request and limit and the chat tier's replica count. compose.yaml (with
compose.prometheus.yaml), the swarm stack docker/swarm-stack.sh prints and every kustomization
under deploy/kubernetes are rendered here by their own tools (no engine, no cluster), and each
of those values is compared with the file's. A copy of the files with one value changed in one
place proves that the comparison fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.lib import harness

ROOT = harness.ROOT
SETTINGS = Path("deploy/settings/deploy.env")
KUBERNETES = Path("deploy/kubernetes")
# What a copy of the checkout needs for compose, the swarm script and kustomize to render it.
RENDERED_FROM = (
    "compose.yaml",
    "compose.prometheus.yaml",
    ".env.example",
    "docker/swarm-stack.sh",
    "deploy",
    "conf/haproxy",
    "web",
)
# The settings of .env.example whose defaults are deploy.env's under another name.
ENV_EXAMPLE_NAMES = {
    "CHAT_PUBLISHED_PORT": "HAPROXY_PORT",
    "LOGIN_PUBLISHED_PORT": "HAPROXY_LOGIN_PORT",
    "PROFILE_PUBLISHED_PORT": "HAPROXY_PROFILE_PORT",
    "STATS_PUBLISHED_PORT": "HAPROXY_STATS_PORT",
    "STATS_PUBLISHED_ADDRESS": "PUBLISHED_ADDRESS",
}
# Each service's deployment name and the prefix of its keys in deploy.env.
SERVICES = {"login": "LOGIN", "profile": "PROFILE", "chat": "CHAT"}
# HAProxy's ports by the name the manifests give them, and their keys.
HAPROXY_PORTS = {
    "chat": "HAPROXY_PORT",
    "login": "HAPROXY_LOGIN_PORT",
    "profile": "HAPROXY_PROFILE_PORT",
    "stats": "HAPROXY_STATS_PORT",
}
RESOURCES = {
    "CPU_REQUEST": ("requests", "cpu"),
    "MEMORY_REQUEST": ("requests", "memory"),
    "MEMORY_LIMIT": ("limits", "memory"),
}

# (what, the value found, the value deploy.env gives)
Check = tuple[str, object, object]


def read_settings(root: Path) -> dict[str, str]:
    """deploy.env as kustomize reads it: KEY=value lines; comments and blank lines skipped."""
    settings = {}
    for line in (root / SETTINGS).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, separator, value = line.partition("=")
            assert separator, f"{SETTINGS}: not KEY=value: {line!r}"
            settings[key.strip()] = value
    return settings


def clean_environment(**extra: str) -> dict[str, str]:
    """No chatsys setting from the caller's shell: compose falls back on its own defaults."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **extra}


def run(command: list[str], root: Path, **options) -> str:
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120, check=False, **options)
    assert result.returncode == 0, f"{command[0]} failed:\n{result.stderr}"
    return result.stdout


def render_compose(root: Path, scratch: Path) -> dict:
    """compose.yaml with compose.prometheus.yaml, resolved with no .env and no settings."""
    empty_env_file = scratch / "empty.env"
    empty_env_file.write_text("")
    command = [harness.require_tool("docker-compose"), "-f", "compose.yaml", "-f", "compose.prometheus.yaml"]
    output = run([*command, "--env-file", str(empty_env_file), "config"], root, env=clean_environment())
    return yaml.safe_load(output)["services"]


def render_swarm(root: Path, scratch: Path) -> dict:
    """The swarm stack as `docker stack deploy` loads it (`docker stack config`, no engine needed)."""
    environment = clean_environment(HAPROXY_STATS_PASSWORD="secret", DOCKER_CONFIG=str(scratch))
    stack = run([str(root / "docker" / "swarm-stack.sh")], root, env=environment)
    docker = harness.require_tool("docker")
    output = run([docker, "stack", "config", "-c", "-"], root, env=environment, input=stack)
    return yaml.safe_load(output)["services"]


def render_kubernetes(directory: Path) -> list[dict]:
    output = run([harness.require_tool("kubectl"), "kustomize", str(directory)], directory)
    return [document for document in yaml.safe_load_all(output) if document]


def environment_of(spec: dict) -> dict[str, str]:
    environment = spec.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {name: "" if value is None else str(value) for name, value in environment.items()}


def port_of(address: str) -> str:
    """The port of host:port or scheme://host:port."""
    return address.rpartition(":")[2]


def published_ports(spec: dict) -> dict[int, tuple[str, int]]:
    """target -> (host address, "" for every address; published), short or long syntax."""
    found = {}
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            found[int(port["target"])] = (port.get("host_ip", ""), int(port["published"]))
        else:
            *address, published, target = str(port).split(":")
            found[int(target.split("/")[0])] = (address[0] if address else "", int(published))
    return found


def compose_checks(services: dict, settings: dict[str, str], where: str) -> Iterator[Check]:
    """The values of deploy.env in compose's form: compose.yaml, or the swarm stack made of it."""
    for name, prefix in SERVICES.items():
        yield f"{where}: {name}'s image", services[name]["image"], settings["CHATSYS_IMAGE"]
        yield f"{where}: {name}'s PORT", environment_of(services[name])["PORT"], settings[f"{prefix}_PORT"]
    for name in ("profile", "chat"):
        login_url = environment_of(services[name])["LOGIN_URL"]
        yield f"{where}: {name}'s LOGIN_URL port", port_of(login_url), settings["LOGIN_PORT"]
    yield f"{where}: migrate's image", services["migrate"]["image"], settings["CHATSYS_IMAGE"]
    yield f"{where}: mongo's image", services["mongo"]["image"], settings["MONGO_IMAGE"]
    yield f"{where}: chat's replicas", services["chat"]["deploy"]["replicas"], settings["CHAT_REPLICAS"]
    haproxy = services["haproxy"]
    yield f"{where}: haproxy's image", haproxy["image"], settings["HAPROXY_IMAGE"]
    haproxy_environment = environment_of(haproxy)
    for key in HAPROXY_PORTS.values():
        yield f"{where}: haproxy's {key}", haproxy_environment[key], settings[key]
    yield f"{where}: haproxy's CHAT_DNS_PORT", haproxy_environment["CHAT_DNS_PORT"], settings["CHAT_PORT"]
    yield f"{where}: haproxy's LOGIN_SERVER port", port_of(haproxy_environment["LOGIN_SERVER"]), settings["LOGIN_PORT"]
    yield (
        f"{where}: haproxy's PROFILE_SERVER port",
        port_of(haproxy_environment["PROFILE_SERVER"]),
        settings["PROFILE_PORT"],
    )
    published = published_ports(haproxy)
    yield (
        f"{where}: haproxy's container ports",
        sorted(published),
        sorted(int(settings[key]) for key in HAPROXY_PORTS.values()),
    )
    for key in HAPROXY_PORTS.values():
        address, port = published.get(int(settings[key]), ("", None))
        yield f"{where}: haproxy's {key} published as", port, settings[key]
        if address:  # compose's; a swarm publishes on every address of the node
            yield f"{where}: haproxy's {key} published on", address, settings["PUBLISHED_ADDRESS"]
    for name, key in (("prometheus", "PROMETHEUS_IMAGE"), ("node-exporter", "NODE_EXPORTER_IMAGE")):
        if name in services:  # compose.prometheus.yaml's; the swarm stack has none
            yield f"{where}: {name}'s image", services[name]["image"], settings[key]


def one(documents: list[dict], kind: str, name: str) -> dict:
    found = [item for item in documents if item["kind"] == kind and item["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def the_container(workload: dict) -> dict:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def config_map(documents: list[dict], name: str) -> dict[str, str]:
    """A generated ConfigMap's data, found by the name before kustomize's hash suffix."""
    found = [
        item
        for item in documents
        if item["kind"] == "ConfigMap" and item["metadata"]["name"].rpartition("-")[0] == name
    ]
    assert len(found) == 1, f"ConfigMap {name}: {len(found)} found"
    return found[0]["data"]


def expected_image(image: str, overrides: list[dict]) -> str:
    """The image after the kustomization's `images:` (where a cluster pulls it from)."""
    name, _, tag = image.rpartition(":")
    for override in overrides:
        if override["name"] == name:
            name, tag = override.get("newName", name), override.get("newTag", tag)
    return f"{name}:{tag}"


def kubernetes_checks(directory: Path, settings: dict[str, str], where: str) -> Iterator[Check]:
    documents = render_kubernetes(directory)
    overrides = yaml.safe_load((directory / "kustomization.yaml").read_text()).get("images", [])

    def workload_checks(kind: str, name: str, image_key: str, prefix: str) -> Iterator[Check]:
        container = the_container(one(documents, kind, name))
        yield f"{where}: {name}'s image", container["image"], expected_image(settings[image_key], overrides)
        for key, (group, resource) in RESOURCES.items():
            found = container.get("resources", {}).get(group, {}).get(resource)
            yield f"{where}: {name}'s {group}.{resource}", found, settings[f"{prefix}_{key}"]

    def policy_ports(name: str) -> list[int]:
        policy = one(documents, "NetworkPolicy", name)
        return sorted(entry["port"] for rule in policy["spec"]["ingress"] for entry in rule.get("ports", []))

    for name, prefix in SERVICES.items():
        yield from workload_checks("Deployment", name, "CHATSYS_IMAGE", prefix)
        container = the_container(one(documents, "Deployment", name))
        port = settings[f"{prefix}_PORT"]
        environment = {variable["name"]: variable.get("value") for variable in container["env"]}
        yield f"{where}: {name}'s PORT", environment["PORT"], port
        yield (
            f"{where}: {name}'s container ports",
            [entry["containerPort"] for entry in container["ports"]],
            [int(port)],
        )
        service_ports = [entry["port"] for entry in one(documents, "Service", name)["spec"]["ports"]]
        yield f"{where}: {name}'s Service ports", service_ports, [int(port)]
        yield f"{where}: {name}'s NetworkPolicy ports", policy_ports(name), [int(port)]
    yield from workload_checks("Job", "migrate", "CHATSYS_IMAGE", "MIGRATE")
    yield from workload_checks("Deployment", "mongo", "FERRETDB_IMAGE", "DATABASE")
    yield from workload_checks("Deployment", "haproxy", "HAPROXY_IMAGE", "HAPROXY")

    service_settings = config_map(documents, "chatsys-settings")
    yield f"{where}: LOGIN_URL port", port_of(service_settings["LOGIN_URL"]), settings["LOGIN_PORT"]
    haproxy_settings = config_map(documents, "haproxy-settings")
    for key in HAPROXY_PORTS.values():
        yield f"{where}: haproxy's {key}", haproxy_settings[key], settings[key]
    yield f"{where}: haproxy's CHAT_DNS_PORT", haproxy_settings["CHAT_DNS_PORT"], settings["CHAT_PORT"]
    yield f"{where}: haproxy's LOGIN_SERVER port", port_of(haproxy_settings["LOGIN_SERVER"]), settings["LOGIN_PORT"]
    yield (
        f"{where}: haproxy's PROFILE_SERVER port",
        port_of(haproxy_settings["PROFILE_SERVER"]),
        settings["PROFILE_PORT"],
    )
    haproxy = the_container(one(documents, "Deployment", "haproxy"))
    container_ports = {entry["name"]: entry for entry in haproxy["ports"]}
    haproxy_service = one(documents, "Service", "haproxy")["spec"]
    haproxy_service_ports = {entry["name"]: entry["port"] for entry in haproxy_service["ports"]}
    yield f"{where}: haproxy's port names", sorted(container_ports), sorted(HAPROXY_PORTS)
    for name, key in HAPROXY_PORTS.items():
        entry = container_ports.get(name, {})
        yield f"{where}: haproxy's {name} container port", entry.get("containerPort"), settings[key]
        yield f"{where}: haproxy's {name} Service port", haproxy_service_ports.get(name), settings[key]
        if "hostPort" in entry:  # the local overlay's
            yield f"{where}: haproxy's {name} host port", entry["hostPort"], settings[key]
            yield f"{where}: haproxy's {name} host address", entry.get("hostIP"), settings["PUBLISHED_ADDRESS"]
    yield (
        f"{where}: haproxy's NetworkPolicy ports",
        policy_ports("haproxy"),
        sorted(int(settings[key]) for key in HAPROXY_PORTS.values()),
    )

    replicas = one(documents, "Deployment", "chat")["spec"]["replicas"]
    yield f"{where}: chat's replicas", replicas, settings["CHAT_REPLICAS"]
    minimum = one(documents, "HorizontalPodAutoscaler", "chat")["spec"]["minReplicas"]
    yield f"{where}: chat's autoscaler minReplicas", minimum, settings["CHAT_REPLICAS"]


def env_example_checks(root: Path, settings: dict[str, str]) -> Iterator[Check]:
    """The defaults .env.example shows, where they are deploy.env's."""
    for line in (root / ".env.example").read_text().splitlines():
        name, separator, value = line.partition("=")
        key = ENV_EXAMPLE_NAMES.get(name, name)
        if separator and not name.startswith("#") and key in settings:
            yield f".env.example: {name}", value, settings[key]


def unread_keys(root: Path, settings: dict[str, str]) -> Iterator[Check]:
    """A key of deploy.env that no kustomization replaces and compose does not read is a value
    that sets nothing; compose's images are its ${KEY:-default} settings, the rest is checked above."""
    kustomizations = "".join(path.read_text() for path in (root / "deploy").rglob("kustomization.yaml"))
    compose = "".join((root / name).read_text() for name in ("compose.yaml", "compose.prometheus.yaml"))
    for key in settings:
        read = f"fieldPath: data.{key}}}" in kustomizations or f"${{{key}:-" in compose
        yield f"{SETTINGS}: {key} read by kustomize or compose", read, True


def differences(root: Path, scratch: Path) -> list[str]:
    """Every value compose, the swarm stack or a kustomization renders unlike deploy.env's."""
    settings = read_settings(root)
    checks: list[Check] = [
        *unread_keys(root, settings),
        *env_example_checks(root, settings),
        *compose_checks(render_compose(root, scratch), settings, "compose.yaml"),
        *compose_checks(render_swarm(root, scratch), settings, "swarm stack"),
    ]
    for kustomization in sorted((root / KUBERNETES).rglob("kustomization.yaml")):
        directory = kustomization.parent
        checks += kubernetes_checks(directory, settings, directory.relative_to(root).as_posix())
    return [
        f"{what}: {found!r}, {SETTINGS}: {expected!r}"
        for what, found, expected in checks
        if str(found) != str(expected)
    ]


def test_compose_the_swarm_stack_and_every_kustomization_hold_the_values_of_deploy_env(tmp_path):
    assert differences(ROOT, tmp_path) == []


@pytest.mark.parametrize(
    ("path", "old", "new", "reported"),
    [
        # deploy.env changed alone: Kubernetes follows it, compose.yaml does not.
        (SETTINGS, "\nCHAT_PORT=4000\n", "\nCHAT_PORT=4001\n", "compose.yaml: chat's PORT: '4000'"),
        # compose.yaml changed alone: the swarm stack follows it, deploy.env does not.
        (Path("compose.yaml"), "      replicas: 3\n", "      replicas: 4\n", "swarm stack: chat's replicas: 4"),
        (Path("compose.yaml"), "${HAPROXY_IMAGE:-haproxy:2.8}", "${HAPROXY_IMAGE:-haproxy:2.9}", "haproxy's image"),
        (
            Path("compose.prometheus.yaml"),
            "${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.2}",
            "${PROMETHEUS_IMAGE:-prom/prometheus:v2.54.0}",
            "compose.yaml: prometheus's image",
        ),
        (Path(".env.example"), "\nLOGIN_PUBLISHED_PORT=4100\n", "\nLOGIN_PUBLISHED_PORT=4101\n", ".env.example"),
        # A key nothing reads.
        (SETTINGS, "\nCHAT_REPLICAS=3\n", "\nCHAT_REPLICAS=3\nCHAT_MAX_REPLICAS=10\n", "CHAT_MAX_REPLICAS read by"),
        # An overlay that sets a value of its own.
        (
            KUBERNETES / "overlays/production/kustomization.yaml",
            "replicas:\n",
            "replicas:\n  - name: chat\n    count: 5\n",
            "deploy/kubernetes/overlays/production: chat's replicas: 5",
        ),
    ],
)
def test_a_value_changed_in_one_place_alone_is_reported(tmp_path, path, old, new, reported):
    found = differences(changed_copy(tmp_path, path, old, new), tmp_path)
    assert any(reported in line for line in found), "\n".join(found) or "no difference found"


def test_every_kustomization_follows_a_change_of_deploy_env(tmp_path):
    # A limit only Kubernetes has and a port the local overlay also publishes on the node.
    changed_copy(tmp_path, SETTINGS, "\nLOGIN_MEMORY_LIMIT=512Mi\n", "\nLOGIN_MEMORY_LIMIT=384Mi\n")
    copy = changed_copy(tmp_path, SETTINGS, "\nHAPROXY_STATS_PORT=8404\n", "\nHAPROXY_STATS_PORT=8504\n")
    settings = read_settings(copy)
    for kustomization in sorted((copy / KUBERNETES).rglob("kustomization.yaml")):
        directory = kustomization.parent
        checks = kubernetes_checks(directory, settings, directory.relative_to(copy).as_posix())
        assert [f"{what}: {found!r}" for what, found, expected in checks if str(found) != str(expected)] == []


def changed_copy(tmp_path: Path, path: Path, old: str, new: str) -> Path:
    """A copy of what the three renderings read (made once per test), with `old` replaced by `new` in `path`."""
    copy = tmp_path / "checkout"
    for name in RENDERED_FROM:
        source, target = ROOT / name, copy / name
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("node_modules"))
        else:
            shutil.copy2(source, target)
    text = (copy / path).read_text()
    assert text.count(old) == 1, f"{path} no longer holds {old!r} once"
    (copy / path).write_text(text.replace(old, new))
    return copy
