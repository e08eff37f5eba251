"""FerretDB is started in five places, in three languages: scripts/ferretdb.sh, the systemd
unit, the test harness (flags), the local image and the Kubernetes manifest (FERRETDB_*
variables, which FerretDB reads for the same flags). They name the same settings and give
the fixed ones the same values. In-process: it reads the files and starts nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.lib import harness

ROOT = Path(__file__).resolve().parents[2]
# The same everywhere; the others (paths, addresses) depend on where FerretDB runs.
FIXED = {"handler": "sqlite", "telemetry": "disable", "log-level": "warn"}
SETTINGS = {*FIXED, "sqlite-url", "state-dir", "listen-addr", "debug-addr"}
FLAG = re.compile(r'--([a-z-]+)="?([^"\s]*)"?')

pytestmark = pytest.mark.fast


def from_flags(text: str) -> dict[str, str]:
    return dict(FLAG.findall(text))


def from_variables(pairs: dict[str, str]) -> dict[str, str]:
    return {
        name.removeprefix("FERRETDB_").lower().replace("_", "-"): value
        for name, value in pairs.items()
        if name.startswith("FERRETDB_")
    }


def start_script() -> dict[str, str]:
    """The command of scripts/ferretdb.sh's `start` with its SQLite backend's flags, continued
    lines joined."""
    text = (ROOT / "scripts" / "ferretdb.sh").read_text().replace("\\\n", " ")
    (backend,) = [line for line in text.splitlines() if "handler_flags=(--handler=sqlite" in line]
    (command,) = [line for line in text.splitlines() if '"$FERRETDB_BIN" "${handler_flags[@]}"' in line]
    return from_flags(backend) | from_flags(command)


def systemd_unit() -> dict[str, str]:
    text = (ROOT / "conf" / "systemd" / "chatsys-ferretdb.service").read_text()
    (command,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    return from_flags(command)


def harness_flags() -> dict[str, str]:
    return from_flags(" ".join(harness.ferretdb_flags(Path("/tmp/db"), 27017, "-", "sqlite")))


def local_image() -> dict[str, str]:
    text = (ROOT / "docker" / "local" / "ferretdb.Dockerfile").read_text().replace("\\\n", " ")
    (env,) = [line for line in text.splitlines() if line.startswith("ENV FERRETDB_")]
    return from_variables(dict(pair.split("=", 1) for pair in env.removeprefix("ENV").split()))


def kubernetes() -> dict[str, str]:
    documents = yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "base" / "database.yaml").read_text())
    (container,) = [
        container
        for document in documents
        if document and document.get("kind") in ("Deployment", "StatefulSet")
        for container in document["spec"]["template"]["spec"]["containers"]
        if container["name"] == "ferretdb"
    ]
    return from_variables({item["name"]: str(item["value"]) for item in container["env"]})


PLACES = {
    "scripts/ferretdb.sh": start_script,
    "conf/systemd/chatsys-ferretdb.service": systemd_unit,
    "tests/lib/harness.py": harness_flags,
    "docker/local/ferretdb.Dockerfile": local_image,
    "deploy/kubernetes/base/database.yaml": kubernetes,
}


@pytest.mark.parametrize("place", PLACES)
def test_every_place_gives_ferretdb_the_same_settings(place):
    settings = PLACES[place]()
    assert set(settings) == SETTINGS, f"{place} names {sorted(settings)}"
    assert {name: settings[name] for name in FIXED} == FIXED
    # A directory URL: FerretDB keeps one SQLite file per database in it.
    assert settings["sqlite-url"].startswith("file:") and settings["sqlite-url"].endswith("/")


@pytest.mark.parametrize(
    "place", ["scripts/ferretdb.sh", "conf/systemd/chatsys-ferretdb.service", "tests/lib/harness.py"]
)
def test_ferretdb_outside_a_container_listens_on_loopback_only(place):
    assert PLACES[place]()["listen-addr"].startswith("127.0.0.1:")


@pytest.mark.parametrize(
    "place", ["scripts/ferretdb.sh", "conf/systemd/chatsys-ferretdb.service", "tests/lib/harness.py"]
)
def test_ferretdb_outside_a_container_keeps_data_and_state_side_by_side(place):
    settings = PLACES[place]()
    assert settings["state-dir"].endswith("/state")
    assert settings["sqlite-url"] == f"file:{settings['state-dir'].removesuffix('state')}data/"


def test_every_place_that_starts_ferretdb_gives_go_the_same_collector_target():
    """GOGC: the script's default, the unit's, the image's, the manifest's and the harness's."""
    common = (ROOT / "scripts" / "lib" / "common.sh").read_text()
    (default,) = re.findall(r"FERRETDB_GOGC=\$\{FERRETDB_GOGC:-(\d+)\}", common)
    assert "GOGC=$FERRETDB_GOGC setsid" in (ROOT / "scripts" / "ferretdb.sh").read_text()
    unit = (ROOT / "conf" / "systemd" / "chatsys-ferretdb.service").read_text()
    image = (ROOT / "docker" / "local" / "ferretdb.Dockerfile").read_text()
    manifest = yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "base" / "database.yaml").read_text())
    workloads = [doc for doc in manifest if doc and doc["kind"] in ("StatefulSet", "Deployment")]
    containers = [c for doc in workloads for c in doc["spec"]["template"]["spec"]["containers"]]
    (ferretdb,) = [c for c in containers if c["name"] == "ferretdb"]
    values = {
        "unit": re.findall(r"\bGOGC=(\d+)", unit),
        "image": re.findall(r"ENV GOGC=(\d+)", image),
        "manifest": [e["value"] for e in ferretdb["env"] if e["name"] == "GOGC"],
        "harness": [harness.FERRETDB_GOGC],
    }
    assert values == {place: [default] for place in values}, values
