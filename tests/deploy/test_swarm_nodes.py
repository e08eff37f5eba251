"""The stack in a swarm of three Docker engines on this machine (scripts/swarm-nodes.sh: each
engine in a network namespace of its own, the three joined over a bridge; node 1 the
manager). The stack's network is an overlay spanning the nodes, and the chat replicas spread
over them; the database and HAProxy stay on the manager (docker/swarm-nodes.yaml). Through
HAProxy: the contract suites; a rolling update of chat to a new image and scaling chat 3 -> 6
-> 3, both under a posting load with no error; and last, a worker node killed under that
load: no acknowledged post lost or stored twice, few errors, and the swarm puts the node's
chat replicas back on the other two (the time it takes is printed, not asserted).

The images are the local stand-ins (scripts/docker-local-images.sh), built on the engine
that answers (scripts/docker-engine.sh) and copied into the nodes with docker save | load.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.lib import docker_stack, harness
from tests.lib import swarm as swarm_lib
from tests.lib.accounts import User, register_and_login, unique_name
from tests.lib.contract import assert_contract_suites_pass
from tests.lib.rooms import read_room

ROOT = harness.ROOT
NODES_SCRIPT = ROOT / "scripts" / "swarm-nodes.sh"
PLACEMENT_FILE = ROOT / "docker" / "swarm-nodes.yaml"
STACK = "chatsys-nodes-test"
# Tags of this run's own: other checkouts may build chatsys-local/chatsys:latest on the same
# engine meanwhile. The rolled image is the one a rolling update moves chat to: the same
# with a label of its own.
RUN_TAG = uuid.uuid4().hex[:8]
CHATSYS_IMAGE = f"chatsys-local/chatsys:nodes-{RUN_TAG}"
ROLLED_IMAGE = f"chatsys-local/chatsys:rolled-{RUN_TAG}"

pytestmark = pytest.mark.local


@dataclass
class Node:
    name: str
    address: str
    engine: docker_stack.Engine

    @property
    def number(self) -> int:
        return int(self.name.removeprefix("chatsys-node"))


def nodes_script(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    return docker_stack.run([str(NODES_SCRIPT), *args], {**os.environ}, timeout, check)


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    """The image settings (the local stand-ins, and chat's image built from this checkout)
    on the engine that answers, and that engine."""
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        pytest.skip("the nodes are network namespaces with a dockerd each: root and dockerd (docker.io)")
    engine = docker_stack.start_engine()
    try:
        lines = docker_stack.run([str(ROOT / "scripts" / "docker-local-images.sh")], engine.env, 1800).stdout
        settings = dict(line.split("=", 1) for line in lines.splitlines() if "=" in line)
        docker_stack.run(
            [
                "docker",
                "build",
                "--quiet",
                "--tag",
                CHATSYS_IMAGE,
                "--build-arg",
                f"PYTHON_IMAGE={settings['PYTHON_IMAGE']}",
                ".",
            ],
            {**engine.env, "DOCKER_BUILDKIT": "0"},
            900,
        )
        yield {**settings, "CHATSYS_IMAGE": CHATSYS_IMAGE, "DOCKER_HOST": engine.host}
    finally:
        engine.docker("image", "rm", CHATSYS_IMAGE, check=False)  # the tag; the layers stay cached
        docker_stack.stop_engine(engine)


@pytest.fixture(scope="module")
def nodes(images) -> Iterator[list[Node]]:
    """The three nodes in one swarm, with the images: chat's on every node, the database's
    and HAProxy's on the manager, where they run. Removed at the end, data and all."""
    source = docker_stack.Engine(images["DOCKER_HOST"], False, {**os.environ, "DOCKER_HOST": images["DOCKER_HOST"]})
    nodes_script("down")  # what a run killed before its end left behind, if anything
    try:
        found = []
        for line in nodes_script("up").stdout.splitlines():
            name, address, host = line.split()
            found.append(Node(name, address, docker_stack.Engine(host, False, {**os.environ, "DOCKER_HOST": host})))
        assert len(found) == 3, found
        for node in found:
            docker_stack.copy_images(source, node.engine, [CHATSYS_IMAGE])
        docker_stack.copy_images(source, found[0].engine, [images["HAPROXY_IMAGE"], images["MONGO_IMAGE"]])
        yield found
    finally:
        nodes_script("down")


@pytest.fixture(scope="module")
def swarm(nodes, images) -> swarm_lib.SwarmStack:
    manager = nodes[0]
    stack = swarm_lib.deploy(manager.engine, STACK, images, manager.address, (PLACEMENT_FILE,))
    stack.wait_running(3, 300)
    return stack


def chat_nodes(swarm) -> Counter:
    """Node name -> chat tasks running there."""
    return Counter(node for node, state in swarm.running_tasks("chat") if state.startswith("Running"))


# --- a posting load -------------------------------------------------------------------------------


class PostingLoad:
    """Clients posting to one room through HAProxy, each at most one post and one read every
    PACE seconds, every post with an Idempotency-Key (HAProxy may then retry it on another
    server): every outcome counted, every acknowledged message kept."""

    PACE = 0.1

    def __init__(self, swarm: swarm_lib.SwarmStack, clients: int = 2):
        self.chat_url = swarm.chat_url
        self.user: User = register_and_login(swarm.login_url)
        self.room = unique_name("room-")
        self.outcomes: Counter = Counter()
        self.acknowledged: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(number,)) for number in range(clients)]

    def count(self, outcome) -> None:
        with self.lock:
            self.outcomes[outcome] += 1

    def client(self, number: int) -> None:
        session, after, next_send = requests.Session(), 0, time.monotonic()
        with session:
            for sequence in range(1_000_000):
                if self.stopping.is_set():
                    return
                next_send += self.PACE
                try:
                    text = f"c{number}-m{sequence}"
                    posted = session.post(
                        f"{self.chat_url}/rooms/{self.room}/messages",
                        json={"text": text},
                        headers={**self.user.auth, "Idempotency-Key": uuid.uuid4().hex},
                        timeout=30,
                    )
                    self.count(posted.status_code)
                    if posted.status_code == 201:
                        with self.lock:
                            self.acknowledged.append(text)
                    read = session.get(
                        f"{self.chat_url}/rooms/{self.room}/messages",
                        params={"after": after},
                        headers=self.user.auth,
                        timeout=30,
                    )
                    self.count(read.status_code)
                    if read.status_code == 200:
                        after = read.json()["next_after"]
                except requests.RequestException as error:
                    self.count(f"{type(error).__name__}: {str(error)[:120]}")
                self.stopping.wait(max(0.0, next_send - time.monotonic()))

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.outcomes.values())

    @property
    def errors(self) -> int:
        with self.lock:
            return sum(count for outcome, count in self.outcomes.items() if outcome not in (200, 201))

    def wait_requests(self, count: int, timeout: float = 300) -> None:
        harness.wait_until(lambda: self.total >= count, timeout, f"{count} requests of the load", 0.5)

    def __enter__(self) -> PostingLoad:
        created = requests.post(f"{self.chat_url}/rooms", json={"name": self.room}, headers=self.user.auth, timeout=30)
        assert created.status_code == 201, created.text
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exception) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def assert_every_acknowledged_post_stored_once(self) -> None:
        texts = [message["text"] for message in read_room(self.chat_url, self.room, self.user.auth)]
        assert len(texts) == len(set(texts)), "a message was stored twice"
        assert set(self.acknowledged) <= set(texts), "an acknowledged message was lost"


# --- the tests ------------------------------------------------------------------------------------


def test_chat_replicas_spread_over_the_three_nodes_on_one_overlay_network(swarm, nodes):
    swarm.wait_running(3)
    names = {node.name for node in nodes}
    manager = nodes[0]
    assert set(chat_nodes(swarm)) == names, swarm.running_tasks("chat")
    for service in ("mongo", "haproxy"):
        assert {node for node, _ in swarm.running_tasks(service)} == {manager.name}, service
    network = json.loads(manager.engine.docker("network", "inspect", f"{STACK}_default").stdout)[0]
    assert (network["Driver"], network["Scope"]) == ("overlay", "swarm")
    # Every node takes part in the overlay network, each at its own address.
    assert {peer["IP"] for peer in network.get("Peers") or []} == {node.address for node in nodes}, network
    # The chat servers on the workers reach the database on the manager, and HAProxy there
    # reaches each of them, across the overlay.
    swarm.wait_servers_up(3)
    instances, servers = swarm_lib.instances_answering(swarm)
    assert len(instances) == 3 and len(servers) == 3, (instances, servers)


def test_contract_suites_pass_through_haproxy_in_the_three_node_swarm(swarm):
    swarm.wait_running(3)
    swarm.wait_servers_up(3)
    # Every port is HAProxy's, published in host mode on the manager's address.
    assert_contract_suites_pass(swarm.login_url, swarm.profile_url, swarm.chat_url)


def test_rolling_chat_to_a_new_image_under_load_answers_every_request(swarm, nodes):
    swarm.wait_running(3)
    swarm.wait_servers_up(3)
    for node in nodes:
        # Built on each node (a label on top of the image it has), so nothing is copied.
        docker_stack.run(
            ["docker", "build", "--quiet", "--label", f"chatsys.rollout={RUN_TAG}", "--tag", ROLLED_IMAGE, "-"],
            {**node.engine.env, "DOCKER_BUILDKIT": "0"},
            120,
            input=f"FROM {CHATSYS_IMAGE}\n",
        )
    service = swarm.service("chat")
    manager = nodes[0].engine
    with PostingLoad(swarm) as load:
        load.wait_requests(100)
        started = time.monotonic()
        # One task at a time, the new one healthy before the old one stops; HAProxy's checks
        # and retries (haproxy.cfg) take the old one out of the rotation.
        manager.docker(
            "service", "update", "--detach", "--no-resolve-image", "--image", ROLLED_IMAGE,
            "--update-order", "start-first", "--update-parallelism", "1", "--update-failure-action", "pause",
            service,
        )  # fmt: skip

        def rolled() -> bool:
            state = manager.docker("service", "inspect", "--format", "{{json .UpdateStatus}}", service).stdout
            assert '"paused"' not in state and '"rollback' not in state, state
            return '"completed"' in state

        harness.wait_until(rolled, 600, "the rolling update to complete", 1)
        rolled_seconds = time.monotonic() - started
        swarm.wait_running(3)
        swarm.wait_servers_up(3)
        load.wait_requests(load.total + 100)
    print(
        f"rolling update of 3 chat replicas: {rolled_seconds:.0f} s; {load.total} requests, outcomes {dict(load.outcomes)}"
    )
    images = manager.docker(
        "service", "ps", service, "--filter", "desired-state=running", "--format", "{{.Image}}"
    ).stdout.split()
    assert images == [ROLLED_IMAGE] * 3, images
    assert load.errors == 0, load.outcomes
    load.assert_every_acknowledged_post_stored_once()


def test_scaling_chat_3_to_6_to_3_under_load_answers_every_request(swarm, nodes):
    swarm.wait_running(3)
    swarm.wait_servers_up(3)
    service = swarm.service("chat")
    manager = nodes[0].engine
    with PostingLoad(swarm) as load:
        load.wait_requests(100)
        try:
            manager.docker("service", "scale", "--detach", f"{service}=6")
            swarm.wait_running(6, 300)
            swarm.wait_servers_up(6)
            assert set(chat_nodes(swarm)) == {node.name for node in nodes}, swarm.running_tasks("chat")
            load.wait_requests(load.total + 100)
        finally:
            manager.docker("service", "scale", "--detach", f"{service}=3")
        swarm.wait_running(3, 300)
        swarm.wait_servers_up(3)
        load.wait_requests(load.total + 100)
    print(f"scaling 3 -> 6 -> 3: {load.total} requests, outcomes {dict(load.outcomes)}")
    assert load.errors == 0, load.outcomes
    load.assert_every_acknowledged_post_stored_once()


def test_a_killed_worker_node_loses_no_acknowledged_post_and_its_chat_replicas_come_back_elsewhere(swarm, nodes):
    swarm.wait_running(3)
    swarm.wait_servers_up(3)
    manager = nodes[0].engine
    placed = {service: {node for node, _ in swarm.running_tasks(service)} for service in ("login", "profile")}
    on_chat = chat_nodes(swarm)
    workers = [node for node in nodes[1:] if on_chat[node.name]]
    assert workers, on_chat
    # A worker with chat replicas and, if there is one, neither login nor profile: the load's
    # requests then need only chat to come back.
    victim = next((node for node in workers if not any(node.name in names for names in placed.values())), workers[0])
    lost = on_chat[victim.name]

    def node_status() -> str:
        return manager.docker("node", "inspect", "--format", "{{.Status.State}}", victim.name).stdout.strip()

    def replicas_back() -> bool:
        running = chat_nodes(swarm)
        return sum(running.values()) == 3 and victim.name not in running

    def every_service_back() -> bool:
        # Not `docker stack services`: it still counts the dead node's tasks, whose last
        # reported state was running.
        wanted = {"chat": 3, "login": 1, "profile": 1, "mongo": 1, "haproxy": 1}
        for service, count in wanted.items():
            tasks = swarm.running_tasks(service)
            if len(tasks) != count or any(
                node == victim.name or not state.startswith("Running") for node, state in tasks
            ):
                return False
        return True

    with PostingLoad(swarm) as load:
        load.wait_requests(200)
        killed_at = time.monotonic()
        nodes_script("kill", str(victim.number), timeout=120)
        harness.wait_until(lambda: node_status() == "down", 120, f"the manager to mark {victim.name} down", 0.5)
        down_seconds = time.monotonic() - killed_at
        harness.wait_until(replicas_back, 300, "the lost chat replicas to run on the other nodes", 0.5)
        rescheduled_seconds = time.monotonic() - killed_at
        harness.wait_until(every_service_back, 300, "every service to run on the other nodes", 0.5)
        swarm.wait_servers_up(3)
        served_seconds = time.monotonic() - killed_at
        # Enough traffic that 0.5 % is a count, not a fraction of one request.
        load.wait_requests(max(load.total + 200, 1000))
    print(
        f"worker {victim.name} killed with {lost} chat replica(s) (login on {placed['login']}, profile on "
        f"{placed['profile']}): marked down after {down_seconds:.1f} s, replicas running elsewhere after "
        f"{rescheduled_seconds:.1f} s, HAProxy serving 3 after {served_seconds:.1f} s; "
        f"{load.total} requests, {load.errors} errors, outcomes {dict(load.outcomes)}"
    )
    assert load.errors <= load.total * 0.005, load.outcomes
    load.assert_every_acknowledged_post_stored_once()
