"""Run an overlay of the Kubernetes manifests (deploy/kubernetes) on this machine with podman's
`kube play`, wait until every pod is ready by its own readiness probes, and take it down again.
scripts/kube-play.sh is the way in; docs/kubernetes.md says what podman honours and what not.

What podman 4.3 (Debian 12) lacks, and how this fills it, each a step below:
- Services are not read: every pod joins one network whose DNS answers each Service's short
  and full name (NAME.NAMESPACE.svc.cluster.local) with the addresses of the pods its
  selector picks, as a headless Service does (network aliases of aardvark-dns).
- A Secret it plays cannot be read back into an environment variable (fixed after 4.3): the
  Secrets are stored here, in the form podman reads (a JSON object of base64 values).
- A ConfigMap volume whose items have paths in a folder (web/js/...) fails: the volume is
  made here first, with its folders.
- Every container port is published on the host, on every address, hostPort or not: only
  the ports with a hostPort (127.0.0.1 in the local overlay) are kept.
- Readiness probes are ignored, and liveness probes become healthchecks run by systemd
  timers (none without systemd): the probes are run here, inside each container.
- Jobs are not played: each Job's pod template is played as a bare Pod instead (the
  migration's: restartPolicy OnFailure, so run again until it exits 0), and waited for
  until its container has exited 0.
- As root it raises every container's open files and processes to 1048576, which fails
  where it may not (no CAP_SYS_RESOURCE, as in a container): there the containers get the
  limits this runs with, as Docker's containers get dockerd's.
The images are those Docker builds (scripts/docker-local-images.sh and the Dockerfile),
copied into podman's store whenever they differ.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
NETWORK = os.environ.get("KUBE_NETWORK", "chatsys-kube")
CLUSTER_DOMAIN = os.environ.get("KUBE_CLUSTER_DOMAIN", "cluster.local")
READY_SECONDS = float(os.environ.get("KUBE_READY_SECONDS", "240"))
# The published ports, by the name of HAProxy's container port: the same settings as compose.yaml's.
PUBLISHED_PORT_SETTINGS = {
    "chat": "CHAT_PUBLISHED_PORT",
    "login": "LOGIN_PUBLISHED_PORT",
    "profile": "PROFILE_PUBLISHED_PORT",
    "stats": "STATS_PUBLISHED_PORT",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(argv: list[str], check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
        )
    return result


def podman(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    # Without systemd (a container, a CI runner) podman keeps its cgroups and events itself.
    no_systemd = [] if Path("/run/systemd/system").is_dir() else ["--cgroup-manager=cgroupfs", "--events-backend=file"]
    return run(["podman", *no_systemd, *args], check=check, **kwargs)


# --- the rendered manifests ----------------------------------------------------------------


@dataclass
class Workload:
    """A Deployment as podman plays it: `replicas` pods named NAME-pod-0, NAME-pod-1, ..."""

    document: dict
    aliases: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.document["metadata"]["name"]

    @property
    def pod_spec(self) -> dict:
        return self.document["spec"]["template"]["spec"]

    @property
    def replicas(self) -> int:
        return int(self.document["spec"].get("replicas", 1))

    def pods(self) -> list[str]:
        return [f"{self.name}-pod-{index}" for index in range(self.replicas)]

    def containers(self) -> list[tuple[str, dict]]:
        """(podman's container name, the container's spec) of every pod."""
        return [
            (f"{pod}-{container['name']}", container)
            for pod in self.pods()
            for container in self.pod_spec["containers"]
        ]


def render(overlay: Path) -> list[dict]:
    output = run(["kubectl", "kustomize", str(overlay)]).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def of_kind(documents: list[dict], kind: str) -> list[dict]:
    return [document for document in documents if document.get("kind") == kind]


def workloads(documents: list[dict]) -> list[Workload]:
    """Each Deployment with the DNS names of the Services that select its pods."""
    found = []
    for deployment in of_kind(documents, "Deployment"):
        workload = Workload(deployment)
        labels = deployment["spec"]["template"]["metadata"].get("labels", {})
        for service in of_kind(documents, "Service"):
            selector = service["spec"].get("selector") or {}
            if selector and all(labels.get(key) == value for key, value in selector.items()):
                name, namespace = service["metadata"]["name"], service["metadata"].get("namespace", "default")
                workload.aliases += [name, f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"]
        found.append(workload)
    # The database first, HAProxy (which publishes the ports) last: the pods would wait for
    # each other anyway, but this way the first ones are ready sooner.
    return sorted(found, key=lambda workload: (not uses_claims(workload), publishes(workload)))


def one_shots(documents: list[dict]) -> list[dict]:
    """Each Job as the bare Pod of its template, which podman plays: its containers run to
    completion, and again on failure (restartPolicy OnFailure), as the Job's pod would."""
    pods = []
    for job in of_kind(documents, "Job"):
        template = job["spec"]["template"]
        metadata = {"name": job["metadata"]["name"], "labels": template.get("metadata", {}).get("labels", {})}
        if "namespace" in job["metadata"]:
            metadata["namespace"] = job["metadata"]["namespace"]
        pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
    return pods


def one_shot_containers(pod: dict) -> list[str]:
    """podman's names of a bare Pod's containers: POD-CONTAINER."""
    return [f"{pod['metadata']['name']}-{container['name']}" for container in pod["spec"]["containers"]]


def uses_claims(workload: Workload) -> bool:
    return any("persistentVolumeClaim" in volume for volume in workload.pod_spec.get("volumes", []))


def publishes(workload: Workload) -> bool:
    return any(port.get("hostPort") for _, container in workload.containers() for port in container.get("ports", []))


def publish_settings(documents: list[dict]) -> dict[str, int]:
    """Apply CHAT_PUBLISHED_PORT and the others to the hostPorts; the ports, by name."""
    published = {}
    for deployment in of_kind(documents, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for port in container.get("ports", []):
                if not port.get("hostPort"):
                    continue
                setting = PUBLISHED_PORT_SETTINGS.get(port.get("name", ""))
                if setting and os.environ.get(setting):
                    port["hostPort"] = int(os.environ[setting])
                published[port.get("name", str(port["containerPort"]))] = port["hostPort"]
    return published


def for_podman(workload: Workload) -> dict:
    """The Deployment as podman 4.3 must get it: only the ports it should publish."""
    document = json.loads(json.dumps(workload.document))
    for container in document["spec"]["template"]["spec"]["containers"]:
        # podman 4.3 publishes a containerPort without hostPort on the same host port, on
        # every address; inside the pod every port is reachable anyway.
        container["ports"] = [port for port in container.get("ports", []) if port.get("hostPort")]
    return document


# --- images ------------------------------------------------------------------------------------


def images(workload_list: list[Workload]) -> list[str]:
    return sorted({container["image"] for workload in workload_list for _, container in workload.containers()})


def docker_env(host: str) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": host, "DOCKER_BUILDKIT": "0"}


def docker_image_id(image: str, env: dict[str, str]) -> str:
    result = run(["docker", "image", "inspect", "--format", "{{.Id}}", image], check=False, env=env)
    return result.stdout.strip().removeprefix("sha256:") if result.returncode == 0 else ""


def podman_image_id(image: str) -> str:
    result = podman("image", "inspect", "--format", "{{.Id}}", image, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def provide_images(workload_list: list[Workload]) -> None:
    """Build what Docker lacks (the stand-ins, the service image), then copy every image
    into podman's store unless podman has the very same one (same id) already."""
    engine = run([str(SCRIPTS / "docker-engine.sh"), "host"], check=False)
    started = engine.returncode != 0
    host = run([str(SCRIPTS / "docker-engine.sh"), "start"]).stdout.strip() if started else engine.stdout.strip()
    env = docker_env(host)
    try:
        settings = dict(
            line.split("=", 1)
            for line in run([str(SCRIPTS / "docker-local-images.sh")], env=env).stdout.splitlines()
            if "=" in line
        )
        login = next(workload for workload in workload_list if workload.name == "login")
        service_image = login.pod_spec["containers"][0]["image"]
        log(f"building {service_image} from the Dockerfile on {settings['PYTHON_IMAGE']}")
        run(
            ["docker", "build", "--quiet", "--build-arg", f"PYTHON_IMAGE={settings['PYTHON_IMAGE']}"]
            + ["-t", service_image, str(ROOT)],
            env=env,
        )
        for image in images(workload_list):
            wanted = docker_image_id(image, env)
            if not wanted:
                raise SystemExit(f"Docker has no image {image} (scripts/docker-local-images.sh builds the stand-ins)")
            old = podman_image_id(image)
            if old == wanted:
                continue
            log(f"copying {image} from Docker into podman's store")
            with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, env=env) as save:
                podman("load", "--quiet", stdin=save.stdout)
            if save.returncode != 0:
                raise SystemExit(f"docker save {image} failed")
            # The short name the manifests use, as podman looks it up first (localhost/...).
            podman("tag", wanted, image)
            if old:
                podman("image", "rm", old, check=False)  # the copy it replaces, unless a container uses it
    finally:
        if started:
            run([str(SCRIPTS / "docker-engine.sh"), "stop"], check=False)


# --- what podman lacks --------------------------------------------------------------------------


def store_secrets(documents: list[dict]) -> list[str]:
    names = []
    for secret in of_kind(documents, "Secret"):
        values = dict(secret.get("data") or {})
        for key, value in (secret.get("stringData") or {}).items():
            values[key] = base64.b64encode(str(value).encode()).decode()
        name = secret["metadata"]["name"]
        podman("secret", "rm", name, check=False)
        podman("secret", "create", name, "-", input=json.dumps(values))
        names.append(name)
    return names


def prepare_config_map_volumes(workload: Workload) -> list[str]:
    """Make each ConfigMap volume with the folders its items' paths need."""
    names = []
    for volume in workload.pod_spec.get("volumes", []):
        config_map = volume.get("configMap")
        if not config_map:
            continue
        names.append(config_map["name"])
        folders = {str(Path(item["path"]).parent) for item in config_map.get("items", [])} - {"."}
        if not folders:
            continue
        if podman("volume", "exists", config_map["name"], check=False).returncode != 0:
            podman("volume", "create", config_map["name"])
        mountpoint = Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", config_map["name"]).stdout.strip())
        for folder in folders:
            (mountpoint / folder).mkdir(parents=True, exist_ok=True)
    return names


def claims(workload: Workload) -> list[str]:
    return [
        volume["persistentVolumeClaim"]["claimName"]
        for volume in workload.pod_spec.get("volumes", [])
        if "persistentVolumeClaim" in volume
    ]


def podman_limits_allowed() -> bool:
    """Whether the limits podman gives a container as root (1048576 open files and processes,
    its define.RLimitDefaultValue) may be set here: the OCI runtime sets them as podman's child."""
    probe = "import resource\nfor limit in (resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC):\n"
    probe += "    resource.setrlimit(limit, (1048576, 1048576))"
    return run([sys.executable, "-c", probe], check=False).returncode == 0


def ulimit_value(value: int, ceiling: int | None = None) -> str:
    """A limit as podman's --ulimit takes it (-1: unlimited), at most `ceiling`."""
    if value == resource.RLIM_INFINITY:
        return str(ceiling or -1)
    return str(min(value, ceiling) if ceiling else value)


def keep_own_limits(state: Path) -> None:
    """Where podman's limits may not be set, give the containers this process's own, in a
    containers.conf of its own (podman 4.3's kube play has no --ulimit). CONTAINERS_CONF
    replaces the system's containers.conf for these commands; one set already is left alone."""
    if os.environ.get("CONTAINERS_CONF") or podman_limits_allowed():
        return
    # podman first lowers its own process limit to the kernel's pid_max when it can (as
    # containers/common's defaults do): no container of it can have more than that.
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    limits = [
        f"nofile={':'.join(map(ulimit_value, resource.getrlimit(resource.RLIMIT_NOFILE)))}",
        f"nproc={':'.join(ulimit_value(value, pid_max) for value in resource.getrlimit(resource.RLIMIT_NPROC))}",
    ]
    config = state / "containers.conf"
    config.write_text(f"[containers]\ndefault_ulimits = {json.dumps(limits)}\n")
    os.environ["CONTAINERS_CONF"] = str(config)
    log(f"podman may not raise the containers' limits here: they keep this one's ({', '.join(limits)})")


# --- readiness -----------------------------------------------------------------------------------


def probe_port(container: dict, port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise SystemExit(f"container {container['name']}: no port named {port}")


def probe_command(container: dict, probe: dict) -> str:
    """The probe as a bash command run inside the container (every image here has bash)."""
    if "httpGet" in probe:
        port = probe_port(container, probe["httpGet"]["port"])
        path = probe["httpGet"].get("path", "/")
        # The kubelet's rule: any status from 200 to 399 passes.
        return (
            f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3"
            " && read -r _ status _ <&3 && ((status >= 200 && status < 400))"
        )
    if "tcpSocket" in probe:
        return f"exec 3<>/dev/tcp/127.0.0.1/{probe_port(container, probe['tcpSocket']['port'])}"
    if "exec" in probe:
        return " ".join(probe["exec"]["command"])
    raise SystemExit(f"container {container['name']}: a readiness probe of a kind this does not run")


def container_state(name: str) -> str:
    result = podman("container", "inspect", "--format", "{{.State.Status}}", name, check=False)
    return result.stdout.strip() if result.returncode == 0 else "missing"


def is_ready(name: str, container: dict) -> bool:
    probe = container.get("readinessProbe")
    if probe is None:
        return container_state(name) == "running"
    timeout = float(probe.get("timeoutSeconds", 1)) + 5  # podman exec itself takes a moment
    try:
        result = podman("exec", name, "bash", "-c", probe_command(container, probe), check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def wait_completed(names: list[str]) -> None:
    """Until each container has exited 0 (a failed run is run again by its restart policy)."""
    waiting = set(names)
    deadline = time.monotonic() + READY_SECONDS
    while waiting:
        for name in sorted(waiting):
            state = podman(
                "container", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name, check=False
            )
            if state.stdout.split() == ["exited", "0"]:
                waiting.discard(name)
        if waiting and time.monotonic() > deadline:
            logs = "".join(podman("logs", "--tail", "30", name, check=False).stdout for name in sorted(waiting))
            raise SystemExit(f"did not complete within {READY_SECONDS:g} s: {', '.join(sorted(waiting))}\n{logs}")
        if waiting:
            time.sleep(1)


def wait_ready(workload_list: list[Workload]) -> None:
    waiting = {name: container for workload in workload_list for name, container in workload.containers()}
    deadline = time.monotonic() + READY_SECONDS
    while waiting:
        for name, container in list(waiting.items()):
            state = container_state(name)
            if state in ("exited", "missing", "stopped"):
                logs = podman("logs", "--tail", "30", name, check=False)
                raise SystemExit(f"container {name} is {state}:\n{logs.stdout}{logs.stderr}")
            if is_ready(name, container):
                del waiting[name]
        if not waiting:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"not ready within {READY_SECONDS:g} s: {', '.join(sorted(waiting))}")
        time.sleep(1)


# --- the commands ----------------------------------------------------------------------------------


def state_dir() -> Path:
    var = Path(os.environ.get("CHATSYS_VAR") or ROOT / "var")
    return var / "kube"


def up(overlay: Path) -> None:
    state = state_dir()
    if (state / "state.json").exists():
        # Played already: up again only waits for it and tells where it is.
        overlay = Path(json.loads((state / "state.json").read_text())["overlay"])
        documents = render(overlay)
        published = publish_settings(documents)
        log(f"already up (from {overlay}); waiting until every pod is ready")
        wait_ready(workloads(documents))
        print_urls(published)
        return
    documents = render(overlay)
    published = publish_settings(documents)
    workload_list = workloads(documents)
    provide_images(workload_list)

    state.mkdir(parents=True, exist_ok=True)
    keep_own_limits(state)
    record: dict[str, Any] = {"overlay": str(overlay), "played": [], "secrets": [], "config_maps": [], "claims": []}
    if podman("network", "exists", NETWORK, check=False).returncode != 0:
        podman("network", "create", NETWORK)
    record["network"] = NETWORK
    record["secrets"] = store_secrets(documents)
    (state / "state.json").write_text(json.dumps(record, indent=2))

    started = time.monotonic()
    config_maps = of_kind(documents, "ConfigMap")
    claim_documents = {claim["metadata"]["name"]: claim for claim in of_kind(documents, "PersistentVolumeClaim")}
    for workload in workload_list:
        record["config_maps"] += prepare_config_map_volumes(workload)
        record["claims"] += claims(workload)
        played = state / f"{workload.name}.yaml"
        # A claim's volume kept by an earlier `down` (without --volumes) is used as it is:
        # podman 4.3 fails to play a claim whose volume exists.
        new_claims = [name for name in claims(workload) if podman("volume", "exists", name, check=False).returncode]
        played.write_text(
            yaml.safe_dump_all(
                [*config_maps, *(claim_documents[name] for name in new_claims), for_podman(workload)],
                sort_keys=False,
            )
        )
        record["played"].append(str(played))
        (state / "state.json").write_text(json.dumps(record, indent=2))
        network = (
            f"{NETWORK}:" + ",".join(f"alias={alias}" for alias in workload.aliases) if workload.aliases else NETWORK
        )
        log(f"playing {workload.name}: {workload.replicas} pod(s), DNS names {', '.join(workload.aliases) or 'none'}")
        podman("kube", "play", "--quiet", "--log-driver", "k8s-file", "--network", network, str(played))
    # The Jobs (the database's migration) beside the services, as on a cluster: the services
    # answer /ready only once it has run.
    jobs = one_shots(documents)
    for pod in jobs:
        played = state / f"{pod['metadata']['name']}.yaml"
        played.write_text(yaml.safe_dump_all([*config_maps, pod], sort_keys=False))
        record["played"].append(str(played))
        (state / "state.json").write_text(json.dumps(record, indent=2))
        log(f"playing the Job {pod['metadata']['name']} as a pod that runs to completion")
        podman("kube", "play", "--quiet", "--log-driver", "k8s-file", "--network", NETWORK, str(played))

    wait_completed([name for pod in jobs for name in one_shot_containers(pod)])
    wait_ready(workload_list)
    log(f"every pod ready {time.monotonic() - started:.0f} s after the first was played")
    print_urls(published)


def print_urls(published: dict[str, int]) -> None:
    for name, port in published.items():
        print(f"{name:<9} http://127.0.0.1:{port}")
    print("stop with scripts/kube-play.sh down")


def down(remove_claims: bool) -> None:
    state = state_dir()
    record_file = state / "state.json"
    if not record_file.exists():
        log("nothing played (no state): nothing to do")
        return
    record = json.loads(record_file.read_text())
    for played in reversed(record["played"]):
        if Path(played).exists():
            podman("kube", "down", played, check=False)
    for name in record["secrets"]:
        podman("secret", "rm", name, check=False)
    for name in sorted(set(record["config_maps"])):
        podman("volume", "rm", "--force", name, check=False)
    if remove_claims:
        for name in sorted(set(record["claims"])):
            podman("volume", "rm", "--force", name, check=False)
    if record.get("network"):
        podman("network", "rm", "--force", record["network"], check=False)
    for played in record["played"]:
        Path(played).unlink(missing_ok=True)
    (state / "containers.conf").unlink(missing_ok=True)
    record_file.unlink()
    log("down")


def status() -> None:
    print(podman("pod", "ps", "--format", "{{.Name}} {{.Status}} {{.NumberOfContainers}}").stdout, end="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="kube-play.sh")
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="play the overlay and wait until every pod is ready")
    up_parser.add_argument(
        "overlay",
        nargs="?",
        type=Path,
        default=Path(os.environ.get("KUBE_OVERLAY") or ROOT / "deploy" / "kubernetes" / "overlays" / "local"),
        help="a kustomization folder (default: deploy/kubernetes/overlays/local)",
    )
    down_parser = commands.add_parser("down", help="remove the pods, secrets, ConfigMap volumes and the network")
    down_parser.add_argument("--volumes", action="store_true", help="and the volumes of the claims (the data)")
    commands.add_parser("status", help="podman's pods")
    arguments = parser.parse_args()
    if arguments.command == "up":
        up(arguments.overlay.resolve())
    elif arguments.command == "down":
        down(arguments.volumes)
    else:
        status()


if __name__ == "__main__":
    main()
