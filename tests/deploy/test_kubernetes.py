"""The Kubernetes manifests (deploy/kubernetes): rendered with `kubectl kustomize` and held to
the API's schema (scripts/kube-lint.sh, which must refuse a broken manifest), held to what
compose.yaml says (images, ports, settings), and then run: the local overlay played with
podman's `kube play` (scripts/kube-play.sh) on the local stand-in images, every pod ready by
its own readiness probe, and the contract suites passed through HAProxy's published
loopback ports. docs/kubernetes.md says what only a real cluster can show.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml

from scripts.lib import haproxy_stats
from tests.lib import harness
from tests.lib.contract import assert_contract_suites_pass
from tests.lib.docker_stack import free_ports
from tests.lib.web_stack import web_files

ROOT = harness.ROOT
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("local", "production")
LINT_SCRIPT = ROOT / "scripts" / "kube-lint.sh"
PLAY_SCRIPT = ROOT / "scripts" / "kube-play.sh"
SERVICES = {"login": 4100, "profile": 4200, "chat": 4000}
HAPROXY_PORTS = {"chat": 5000, "login": 4100, "profile": 4200, "stats": 8404}
CLUSTER_DOMAIN = "cluster.local"


def render(directory: Path) -> list[dict]:
    kubectl = harness.require_tool("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> list[dict]:
    return render(KUBERNETES / "overlays" / request.param)


@pytest.fixture(scope="module")
def local() -> list[dict]:
    return render(KUBERNETES / "overlays" / "local")


def find(documents: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [
        document
        for document in documents
        if document["kind"] == kind and (name is None or document["metadata"]["name"] == name)
    ]


def one(documents: list[dict], kind: str, name: str) -> dict:
    found = find(documents, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(documents: list[dict], deployment: str) -> dict:
    containers = one(documents, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def environment(documents: list[dict], deployment: str) -> dict[str, str]:
    """The container's environment as a pod would see it: its ConfigMaps, then env (a value,
    or "secret:NAME/KEY" for a Secret's)."""
    spec = container(documents, deployment)
    values: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        config_map = one(documents, "ConfigMap", source["configMapRef"]["name"])
        values.update(config_map["data"])
    for variable in spec.get("env", []):
        if "value" in variable:
            values[variable["name"]] = variable["value"]
        else:
            reference = variable["valueFrom"]["secretKeyRef"]
            values[variable["name"]] = f"secret:{reference['name']}/{reference['key']}"
    return values


def compose_defaults() -> dict[str, dict[str, str]]:
    """compose.yaml's environment of each service with the defaults of its ${VAR:-default}."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    resolved: dict[str, dict[str, str]] = {}
    for name, service in compose["services"].items():
        values = {}
        for key, value in (service.get("environment") or {}).items():
            text = "" if value is None else str(value)
            values[key] = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)
        resolved[name] = values
    return resolved


def run_lint(*directories: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_SCRIPT), *map(str, directories)], capture_output=True, text=True, timeout=300, check=False
    )


# --- the files hold to the API and to compose.yaml ----------------------------------------------


def test_every_kustomization_renders_and_holds_to_the_api_schema():
    result = run_lint()
    assert result.returncode == 0, result.stderr
    for name in ("deploy/kubernetes/base", *(f"deploy/kubernetes/overlays/{overlay}" for overlay in OVERLAYS)):
        assert f"{name}: " in result.stderr and "hold to the Kubernetes" in result.stderr


def test_schema_check_refuses_a_broken_manifest(tmp_path):
    # An overlay of the local overlay with a misspelt probe in the chat Deployment: kustomize
    # renders it without complaint, the schema check must not.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(KUBERNETES / "overlays" / "local", broken)],
                "patches": [
                    {
                        "target": {"kind": "Deployment", "name": "chat"},
                        "patch": yaml.safe_dump(
                            [
                                {
                                    "op": "add",
                                    "path": "/spec/template/spec/containers/0/livenesProbe",
                                    "value": {"tcpSocket": {"port": 4000}},
                                }
                            ]
                        ),
                    }
                ],
            }
        )
    )
    result = run_lint(broken)
    assert result.returncode != 0
    assert "deployment/chat" in result.stdout + result.stderr and "livenesProbe" in result.stdout + result.stderr


def test_services_run_the_compose_images_commands_and_ports(local):
    for name, port in SERVICES.items():
        spec = container(local, name)
        assert spec["image"] == "chatsys-local/chatsys:latest", "the image tests/lib/docker_stack.py builds"
        assert spec["args"] == ["gunicorn", "-c", "conf/gunicorn.conf.py", f"{name}_service.wsgi:app"]
        assert "command" not in spec, "the image's entry point (docker/entrypoint.sh) must stay"
        assert environment(local, name)["PORT"] == str(port)
        assert [declared["containerPort"] for declared in spec["ports"]] == [port]
    stand_ins = (ROOT / "scripts" / "docker-local-images.sh").read_text()
    assert "haproxy_image=chatsys-local/haproxy:2.6" in stand_ins
    assert container(local, "haproxy")["image"] == "chatsys-local/haproxy:2.6"
    ferretdb_version = re.search(
        r"FERRETDB_VERSION=\$\{FERRETDB_VERSION:-(\S+)\}", (ROOT / "scripts/lib/common.sh").read_text()
    )
    assert ferretdb_version
    assert container(local, "mongo")["image"] == f"chatsys-local/ferretdb:{ferretdb_version.group(1)}"


def test_settings_are_compose_settings_with_cluster_names(local):
    compose = compose_defaults()
    for name in SERVICES:
        manifest = environment(local, name)
        for key, value in compose[name].items():
            if key == "MONGO_URI":
                assert manifest[key] == "secret:chatsys-secrets/MONGO_URI"
            else:
                assert manifest.get(key) == value, f"{name}: {key}"
    secret = one(local, "Secret", "chatsys-secrets")
    assert secret["stringData"]["MONGO_URI"] == compose["login"]["MONGO_URI"]
    haproxy = environment(local, "haproxy")
    for key, value in compose["haproxy"].items():
        if key == "HAPROXY_STATS_PASSWORD":
            assert haproxy[key] == "secret:chatsys-secrets/HAPROXY_STATS_PASSWORD"
        elif key in ("LOGIN_SERVER", "PROFILE_SERVER", "CHAT_DNS_NAME"):
            # HAProxy's resolver uses no search domain: the Services' full names.
            host, _, port = value.partition(":")
            expected = f"{host}.chatsys.svc.{CLUSTER_DOMAIN}" + (f":{port}" if port else "")
            assert haproxy[key] == expected, key
        else:
            assert haproxy.get(key) == value, f"haproxy: {key}"
    assert "HAPROXY_RESOLV_CONF" in haproxy


def test_haproxy_reads_the_repository_config_and_serves_every_web_file(local):
    haproxy = one(local, "Deployment", "haproxy")["spec"]["template"]["spec"]
    mounts = {mount["name"]: mount for mount in haproxy["containers"][0]["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in haproxy["volumes"]}
    assert mounts["config"]["mountPath"] == "/usr/local/etc/haproxy" and mounts["config"]["readOnly"]
    config = one(local, "ConfigMap", volumes["config"]["configMap"]["name"])
    assert config["data"]["haproxy.cfg"] == (ROOT / "conf/haproxy/haproxy.cfg").read_text()
    assert mounts["web"]["mountPath"] == "/usr/local/web" and mounts["web"]["readOnly"]
    web = one(local, "ConfigMap", volumes["web"]["configMap"]["name"])
    items = {item["path"]: item["key"] for item in volumes["web"]["configMap"]["items"]}
    # web.lua (loaded from the same ConfigMap) serves every client file of the folder it reads.
    assert config["data"]["web.lua"] == (ROOT / "conf/haproxy/web.lua").read_text()
    served = {path.relative_to(ROOT / "web").as_posix() for path in web_files()}
    assert served == set(items), "every file HAProxy serves, each in the volume at its path"
    for path, key in items.items():
        assert web["data"][key] == (ROOT / "web" / path).read_text(), path


def test_every_workload_is_probed_ready_and_alive(overlay):
    for name in SERVICES:
        spec = container(overlay, name)
        assert spec["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert spec["livenessProbe"]["httpGet"]["path"] == "/health"
        assert spec["startupProbe"]["httpGet"]["path"] == "/health", "no liveness kill while it waits for the database"
    for name in ("mongo", "haproxy"):
        spec = container(overlay, name)
        assert spec.get("readinessProbe") and spec.get("livenessProbe"), name


def test_the_migration_is_a_job_of_the_services_image_that_runs_once_to_completion(overlay):
    job = one(overlay, "Job", "migrate")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure", "retried while the database is not there yet"
    (spec,) = pod["containers"]
    assert spec["command"] == ["python", "-m", "service_kit.migrate"], "not the entry script, which starts a server"
    assert spec["image"] == container(overlay, "login")["image"]
    assert spec["envFrom"] == container(overlay, "login")["envFrom"]
    assert [variable for variable in spec["env"] if variable["name"] == "MONGO_URI"] == [
        variable for variable in container(overlay, "login")["env"] if variable["name"] == "MONGO_URI"
    ]
    # Its pod template cannot change: gone after an hour, it is made again by a later apply.
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


def test_every_container_runs_as_a_non_root_user_without_privileges(overlay):
    for deployment in [*find(overlay, "Deployment"), *find(overlay, "Job")]:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for spec in pod["containers"]:
            assert spec["securityContext"]["allowPrivilegeEscalation"] is False
            assert spec["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_chat_scales_within_haproxy_server_slots_and_keeps_two_through_a_drain(overlay):
    autoscaler = one(overlay, "HorizontalPodAutoscaler", "chat")
    budget = one(overlay, "PodDisruptionBudget", "chat")
    chat = one(overlay, "Deployment", "chat")
    slots = int(environment(overlay, "haproxy")["CHAT_DNS_SLOTS"])
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "chat"
    assert chat["spec"]["replicas"] == autoscaler["spec"]["minReplicas"] == 3
    assert autoscaler["spec"]["maxReplicas"] <= slots, "HAProxy uses at most CHAT_DNS_SLOTS chat servers"
    assert budget["spec"]["minAvailable"] < autoscaler["spec"]["minReplicas"], "a drain must be able to proceed"
    assert container(overlay, "chat")["resources"]["requests"]["cpu"], "CPU utilisation needs a request"
    assert one(overlay, "Service", "chat")["spec"]["clusterIP"] == "None", "HAProxy resolves every chat pod"


def allowed_sources(documents: list[dict], target: str, port: int) -> set[str]:
    """The app names whose pods the NetworkPolicies let connect to `target` on `port`
    ("*" for any address)."""
    apps = {document["metadata"]["name"] for document in find(documents, "Deployment")}
    labels = one(documents, "Deployment", target)["spec"]["template"]["metadata"]["labels"]
    allowed: set[str] = set()
    selected = False
    for policy in find(documents, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if not all(labels.get(key) == value for key, value in selector.items()):
            continue
        selected = True
        for rule in policy["spec"].get("ingress", []):
            if rule.get("ports") and port not in [entry["port"] for entry in rule["ports"]]:
                continue
            if "from" not in rule:
                allowed.add("*")
            for peer in rule.get("from", []):
                pod_selector = peer["podSelector"]
                if not pod_selector:
                    allowed |= apps
                for key, value in pod_selector.get("matchLabels", {}).items():
                    assert key == "app.kubernetes.io/name"
                    allowed.add(value)
                for expression in pod_selector.get("matchExpressions", []):
                    assert expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In"
                    allowed |= set(expression["values"])
    assert selected, f"no NetworkPolicy selects {target}"
    return allowed


def test_network_policies_let_only_haproxy_reach_the_services(overlay):
    deny = one(overlay, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {} and deny["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny["spec"]
    assert allowed_sources(overlay, "profile", 4200) == {"haproxy"}
    assert allowed_sources(overlay, "chat", 4000) == {"haproxy"}
    assert allowed_sources(overlay, "login", 4100) == {"haproxy", "profile", "chat"}, "they validate tokens"
    assert allowed_sources(overlay, "mongo", 27017) == {"migrate", "login", "profile", "chat"}
    for port in (5000, 4100, 4200):
        assert allowed_sources(overlay, "haproxy", port) == {"*"}
    assert "*" not in allowed_sources(overlay, "haproxy", 8404), "the stats page stays inside"


def test_local_overlay_publishes_haproxy_alone_on_loopback(local):
    published = {}
    for deployment in find(local, "Deployment"):
        for spec in deployment["spec"]["template"]["spec"]["containers"]:
            for port in spec.get("ports", []):
                if port.get("hostPort"):
                    assert deployment["metadata"]["name"] == "haproxy"
                    assert port["hostIP"] == "127.0.0.1"
                    published[port["name"]] = (port["containerPort"], port["hostPort"])
    assert published == {name: (port, port) for name, port in HAPROXY_PORTS.items()}


def test_production_overlay_ships_no_secret_and_takes_images_from_a_registry():
    production = render(KUBERNETES / "overlays" / "production")
    assert not find(production, "Secret"), "the Secret is created by hand there (docs/kubernetes.md)"
    for deployment in [*find(production, "Deployment"), *find(production, "Job")]:
        for spec in deployment["spec"]["template"]["spec"]["containers"]:
            assert not spec["image"].startswith("chatsys-local/") and not spec["image"].startswith("chatsys:")
            assert not any(port.get("hostPort") for port in spec.get("ports", []))
    assert one(production, "Service", "haproxy")["spec"]["type"] == "LoadBalancer"


# --- the local overlay run by podman ------------------------------------------------------------


class PlayedStack:
    def __init__(self, var_dir: Path, overlay: Path):
        names = ("CHAT_PUBLISHED_PORT", "LOGIN_PUBLISHED_PORT", "PROFILE_PUBLISHED_PORT", "STATS_PUBLISHED_PORT")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.overlay = overlay
        self.env = {
            **os.environ,
            "CHATSYS_VAR": str(var_dir),
            "KUBE_NETWORK": f"chatsys-test-{uuid.uuid4().hex[:8]}",
            **{name: str(port) for name, port in self.ports.items()},
        }
        self.up_output = ""

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def script(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(PLAY_SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check:
            assert result.returncode == 0, f"kube-play.sh {' '.join(args)}:\n{result.stdout}\n{result.stderr[-5000:]}"
        return result

    def podman(self, *args: str) -> subprocess.CompletedProcess:
        podman = harness.require_tool("podman")
        # As scripts/lib/kube_play.py runs it: without systemd, podman keeps cgroups and events itself.
        global_options = (
            [] if Path("/run/systemd/system").is_dir() else ["--cgroup-manager=cgroupfs", "--events-backend=file"]
        )
        return subprocess.run([podman, *global_options, *args], capture_output=True, text=True, timeout=120, check=True)

    def servers_up(self) -> int:
        try:
            stats = requests.get(self.url("STATS_PUBLISHED_PORT") + "/stats;csv", timeout=5)
        except requests.RequestException:
            return -1
        return list(haproxy_stats.server_states(stats.text).values()).count("UP")

    def wait_servers_up(self, count: int, timeout: float = 60) -> None:
        # HAProxy finds the chat pods by DNS and brings each up by its own health check: a
        # moment after the pods are ready, and again after a check lost on a busy machine.
        try:
            harness.wait_until(
                lambda: self.servers_up() == count, timeout, f"HAProxy to see {count} chat servers up", interval=0.5
            )
        except TimeoutError:
            stats = requests.get(self.url("STATS_PUBLISHED_PORT") + "/stats;csv", timeout=5)
            raise AssertionError(f"HAProxy's chat servers: {haproxy_stats.server_states(stats.text)}") from None

    def pod(self, name: str) -> dict:
        found = json.loads(self.podman("pod", "inspect", name).stdout)
        return found[0] if isinstance(found, list) else found  # an object in podman 4, a list in 5


def unlimited_overlay(directory: Path) -> Path:
    """The local overlay, with the edge limits lifted as for every test stack: the test
    clients are one address registering hundreds of users (tests/lib/harness.py)."""
    directory.mkdir()
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(KUBERNETES / "overlays" / "local", directory)],
                "configMapGenerator": [
                    {
                        "name": "haproxy-settings",
                        "behavior": "merge",
                        "literals": [f"{name}={value}" for name, value in harness.UNLIMITED_EDGE.items()],
                    }
                ],
            }
        )
    )
    return directory


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    harness.require_tool("podman")
    harness.require_tool("kubectl")
    base = tmp_path_factory.mktemp("kube")
    stack = PlayedStack(base / "var", unlimited_overlay(base / "overlay"))
    try:
        result = stack.script("up", str(stack.overlay))
        stack.up_output = result.stdout + result.stderr
        yield stack
    finally:
        stack.script("down", "--volumes", check=False, timeout=300)


PODS = ("chat-pod-0", "chat-pod-1", "chat-pod-2", "haproxy-pod-0", "login-pod-0", "mongo-pod-0", "profile-pod-0")


@pytest.mark.local
def test_every_pod_is_ready_when_up_returns(played):
    for pod in PODS:
        assert played.pod(pod)["State"] == "Running", pod
    assert "every pod ready" in played.up_output
    # The Job, played as a pod of its own, ran the migration once to completion.
    migration = played.podman(
        "container", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "migrate-migrate"
    )
    assert migration.stdout.split() == ["exited", "0"], migration.stdout
    assert played.url("CHAT_PUBLISHED_PORT") in played.up_output, "up prints the URLs"
    # Readiness through the entry point: HAProxy's three chat servers, found by DNS, come up.
    played.wait_servers_up(3)


@pytest.mark.local
def test_every_container_runs_as_a_non_root_user(played):
    for name in (
        "chat-pod-0-chat",
        "login-pod-0-login",
        "profile-pod-0-profile",
        "mongo-pod-0-ferretdb",
        "haproxy-pod-0-haproxy",
    ):
        assert played.podman("exec", name, "id", "-u").stdout.strip() not in ("", "0"), name


def listening_addresses(port: int) -> set[str]:
    # A listening socket's laddr is an (ip, port) pair; psutil types it as maybe empty.
    listening: list[Any] = [c.laddr for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    return {address.ip for address in listening if address and address.port == port}


@pytest.mark.local
def test_haproxy_alone_publishes_its_ports_on_loopback_only(played):
    bindings = {
        pod: [
            (binding["HostIp"], int(binding["HostPort"]), int(target.split("/")[0]))
            for target, entries in (played.pod(pod)["InfraConfig"].get("PortBindings") or {}).items()
            for binding in entries or []
        ]
        for pod in PODS
    }
    assert {pod for pod, found in bindings.items() if found} == {"haproxy-pod-0"}, bindings
    names = {"CHAT_PUBLISHED_PORT": 5000, "LOGIN_PUBLISHED_PORT": 4100, "PROFILE_PUBLISHED_PORT": 4200}
    names["STATS_PUBLISHED_PORT"] = 8404
    assert sorted(bindings["haproxy-pod-0"]) == sorted(
        ("127.0.0.1", played.ports[name], target) for name, target in names.items()
    )
    for port in played.ports.values():
        assert listening_addresses(port) == {"127.0.0.1"}, f"port {port}: {listening_addresses(port)}"


@pytest.mark.local
def test_contract_tests_pass_against_the_pods(played):
    # The contract suites in conformance mode, through HAProxy's published ports: login and
    # profile on theirs, chat on the entry point.
    assert_contract_suites_pass(
        played.url("LOGIN_PUBLISHED_PORT"), played.url("PROFILE_PUBLISHED_PORT"), played.url("CHAT_PUBLISHED_PORT")
    )


@pytest.mark.local
def test_three_chat_pods_answer_with_distinct_instances(played):
    played.wait_servers_up(3)
    instances, servers = set(), set()
    with requests.Session() as session:
        for _ in range(60):
            answer = session.get(played.url("CHAT_PUBLISHED_PORT") + "/health", timeout=5)
            assert answer.status_code == 200, answer.text
            instances.add(answer.headers["X-Instance"])
            servers.add(answer.headers["X-Served-By"])
    assert len(instances) == 3 and len(servers) == 3, (instances, servers)
