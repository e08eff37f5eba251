"""/ready follows the database: 503 while it is away, 200 again when it returns, no restart;
and a login service that started before its database prepares it once it is there."""

from __future__ import annotations

import time

import pymongo
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


def test_a_login_service_started_before_its_database_refuses_look_alike_names_once_it_is_up(processes):
    database = harness.start_ferretdb(processes, name=f"ferretdb-late-{unique_name()}")
    database.stop()
    login = harness.start_service(processes, "login", service_env(database, MONGO_TIMEOUT_SECONDS=1))
    database.start()

    def skeletons_are_unique() -> bool:
        client: pymongo.MongoClient = pymongo.MongoClient(database.uri, serverSelectionTimeoutMS=2000)
        with client:
            indexes = client.get_default_database().users.index_information()
        return any(index.get("unique") and index["key"] == [("skeleton", 1)] for index in indexes.values())

    # The service prepares the database (indexes, migrations) off the request path.
    harness.wait_until(skeletons_are_unique, 30, "the login service to index the skeletons")
    name = unique_name()
    first = requests.post(f"{login.url}/users", json={"username": f"{name}m", "password": "long enough"}, timeout=10)
    assert first.status_code == 201
    look_alike = requests.post(
        f"{login.url}/users", json={"username": f"{name}rn", "password": "long enough"}, timeout=10
    )
    assert "looks the same" in assert_problem(look_alike, 409)["detail"]
