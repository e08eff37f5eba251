"""/ready follows the database: 503 while it is away, 200 again when it returns, no restart;
and 503 "database not migrated" on a database the migration command has not run on, until it has."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import service_env
from tests.lib import harness
from tests.lib.accounts import unique_name
from tests.lib.contract import assert_problem

pytestmark = pytest.mark.local


def test_ready_goes_503_while_the_database_is_stopped_and_back_to_200(processes):
    database = harness.start_ferretdb(processes, name=f"ferretdb-ready-{unique_name()}")
    login = harness.start_service(processes, "login", service_env(database, MONGO_TIMEOUT_SECONDS=1))
    assert requests.get(f"{login.url}/ready", timeout=5).status_code == 200

    database.stop()
    started = time.monotonic()
    assert_problem(requests.get(f"{login.url}/ready", timeout=5), 503)
    assert time.monotonic() - started < 3
    assert requests.get(f"{login.url}/health", timeout=5).status_code == 200
    # A request that needs the database fails fast with a 503 problem, never a 500 or a hang.
    started = time.monotonic()
    response = requests.post(
        f"{login.url}/users", json={"username": unique_name(), "password": "long enough"}, timeout=10
    )
    assert_problem(response, 503)
    assert time.monotonic() - started < 5

    database.start()
    harness.wait_until(
        lambda: requests.get(f"{login.url}/ready", timeout=5).status_code == 200, 15, "/ready to answer 200 again"
    )
    assert login.process.running, "the service must recover without a restart"
    response = requests.post(
        f"{login.url}/users", json={"username": unique_name(), "password": "long enough"}, timeout=10
    )
    assert response.status_code == 201


def not_migrated(response: requests.Response) -> bool:
    if response.status_code != 503:
        return False
    body = assert_problem(response, 503)
    return body["type"].endswith("/database-not-migrated")


def test_a_service_on_a_database_not_yet_migrated_is_not_ready_until_the_command_runs(processes):
    """Started before its database, then on a database nobody migrated: /ready and every
    route answer 503 "database not migrated; run ..." (so the unique index on skeletons is
    never silently missing), until the migration command runs; then ready, without a restart."""
    database = harness.start_ferretdb(processes, name=f"ferretdb-late-{unique_name()}", migrated=False)
    database.stop()
    login = harness.start_service(processes, "login", service_env(database, MONGO_TIMEOUT_SECONDS=1))
    assert_problem(requests.get(f"{login.url}/ready", timeout=5), 503)
    database.start()

    harness.wait_until(
        lambda: not_migrated(requests.get(f"{login.url}/ready", timeout=5)), 30, "/ready to say: not migrated"
    )
    detail = assert_problem(requests.get(f"{login.url}/ready", timeout=5), 503)["detail"]
    assert detail.startswith("database not migrated") and "python -m service_kit.migrate" in detail
    name = unique_name()
    refused = requests.post(f"{login.url}/users", json={"username": f"{name}m", "password": "long enough"}, timeout=10)
    assert not_migrated(refused)

    harness.migrate(database.uri)
    harness.wait_until(
        lambda: requests.get(f"{login.url}/ready", timeout=5).status_code == 200, 30, "/ready to answer 200"
    )
    assert login.process.running, "the service must become ready without a restart"
    first = requests.post(f"{login.url}/users", json={"username": f"{name}m", "password": "long enough"}, timeout=10)
    assert first.status_code == 201
    look_alike = requests.post(
        f"{login.url}/users", json={"username": f"{name}rn", "password": "long enough"}, timeout=10
    )
    assert "looks the same" in assert_problem(look_alike, 409)["detail"]
