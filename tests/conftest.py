"""Fixtures: a real FerretDB, real gunicorn services and a real HAProxy, per test session.

Conformance mode: set CHATSYS_LOGIN_URL and CHATSYS_PROFILE_URL (and optionally
CHATSYS_CHAT_URL) to point the contract tests at somebody's deployment; tests marked
`local` (they start, stop or kill processes) are then left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from tests.lib import contract, harness, vm
from tests.lib.accounts import User, register_and_login

REMOTE = {
    "login": os.environ.get("CHATSYS_LOGIN_URL", "").rstrip("/"),
    "profile": os.environ.get("CHATSYS_PROFILE_URL", "").rstrip("/"),
    "chat": os.environ.get("CHATSYS_CHAT_URL", "").rstrip("/"),
}
CONFORMANCE = bool(REMOTE["login"])
# What conformance mode tests: a profile URL left out means the login server serves both.
TARGETS = {**REMOTE, "profile": REMOTE["profile"] or REMOTE["login"]}


def pytest_configure(config):
    config.addinivalue_line("markers", "local: starts, stops or kills processes; left out in conformance mode")
    config.addinivalue_line("markers", "chat: needs a chat service")
    config.addinivalue_line("markers", "fast: in-process, on the real database; `make test-fast` runs these alone")
    config.addinivalue_line("markers", "vm: boots a Debian virtual machine under QEMU (make vm-test runs these alone)")


def pytest_sessionstart(session):
    if CONFORMANCE:
        contract.honour_retry_after()


def pytest_terminal_summary(terminalreporter, config):
    """The boot test's figures (tests/deploy/test_vm_boot.py): accelerator and boot-to-ready times;
    in conformance mode, the target's rate limits: what was waited out, what stopped a test."""
    if CONFORMANCE:
        _report_rate_limits(terminalreporter)
    reports = [lines for lines in config.stash.get(vm.REPORT, []) if lines]
    if reports:
        terminalreporter.section("VM boot test")
        for lines in reports:
            for line in lines:
                terminalreporter.write_line(line)


@pytest.hookimpl(trylast=True)  # after -k and -m have chosen
def pytest_collection_modifyitems(config, items):
    kept, dropped = [], []
    fuzzing = any(item.name.startswith("test_") and "_holds_to_the_document" in item.name for item in items)
    for item in items:
        if item.name == "test_fuzzing_got_past_authentication_everywhere" and not fuzzing:
            dropped.append(item)  # it judges what the fuzz tests saw; none was chosen
        elif CONFORMANCE and _needs_local_processes(item):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _report_rate_limits(terminalreporter) -> None:
    stopped = [report.nodeid for report in terminalreporter.stats.get("failed", []) if "429" in str(report.longrepr)]
    stopped += [report.nodeid for report in terminalreporter.stats.get("error", []) if "429" in str(report.longrepr)]
    if not contract.rate_limited and not stopped:
        return
    terminalreporter.section("the target's rate limits")
    if contract.rate_limited:
        terminalreporter.write_line(
            f"{len(contract.rate_limited)} requests were refused with 429 and sent again after their Retry-After "
            f"(at most {contract.RATE_LIMIT_WAIT_SECONDS} s), e.g. {contract.rate_limited[0]}"
        )
    for nodeid in stopped:
        terminalreporter.write_line(
            f"{nodeid}: stopped by a 429 of the target (a limit with a longer Retry-After, or one that never passed)"
        )


def _needs_local_processes(item) -> bool:
    """In conformance mode: tests that start, stop or kill processes, or that need a
    service nobody gave a URL for."""
    if item.get_closest_marker("local") or {"database", "processes"} & set(getattr(item, "fixturenames", ())):
        return True
    if item.get_closest_marker("chat") is not None and not TARGETS["chat"]:
        return True
    service = getattr(getattr(item, "callspec", None), "params", {}).get("service")
    return service is not None and not TARGETS[service]


@dataclass
class Stack:
    login_url: str
    profile_url: str
    chat_url: str  # the entry point: HAProxy locally, or the given chat URL
    database: harness.Database | None = None
    login: harness.Service | None = None
    profile: harness.Service | None = None
    chat_servers: list[harness.Service] = field(default_factory=list)
    balancer: harness.LoadBalancer | None = None


@pytest.fixture(scope="session")
def processes():
    group = harness.ProcessGroup()
    yield group
    group.close()


@pytest.fixture(scope="session")
def database(processes):
    assert not CONFORMANCE, "conformance mode starts no database (such tests are deselected)"
    return harness.start_ferretdb(processes)


@pytest.fixture(scope="module")
def module_apps(database):
    """In-process apps on the session's database, closed at the end of the module (tests/lib/fast.py)."""
    from tests.lib.fast import Apps  # imported when used: the other layers never load the apps

    apps = Apps()
    yield apps
    apps.close()


@pytest.fixture
def apps(database):
    """In-process apps on the session's database, closed at the end of the test (tests/lib/fast.py)."""
    from tests.lib.fast import Apps

    apps = Apps()
    yield apps
    apps.close()


def service_env(database: harness.Database, login_url: str = "", **overrides) -> dict[str, str]:
    env = {"MONGO_URI": database.uri, "TOKEN_CACHE_SECONDS": "30"}
    if login_url:
        env["LOGIN_URL"] = login_url
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@pytest.fixture(scope="session")
def stack(request) -> Stack:
    if CONFORMANCE:
        return Stack(TARGETS["login"], TARGETS["profile"], TARGETS["chat"])
    # Looked up here, not as parameters, so conformance mode can tell a test that only
    # needs a stack from one that manages processes (tests/conftest.py deselects those).
    processes = request.getfixturevalue("processes")
    database = request.getfixturevalue("database")
    login = harness.start_service(processes, "login", service_env(database))
    profile = harness.start_service(processes, "profile", service_env(database, login.url))
    chats = [harness.start_service(processes, "chat", service_env(database, login.url)) for _ in range(3)]
    balancer = harness.start_haproxy(processes, [chat.port for chat in chats], login=login, profile=profile)
    harness.wait_until(
        lambda: list(balancer.server_states().values()).count("UP") == 3, 15, "HAProxy to see three chat servers up"
    )
    # Clients reach login and profile through HAProxy, as in every deployment.
    return Stack(balancer.login_url, balancer.profile_url, balancer.url, database, login, profile, chats, balancer)


@pytest.fixture
def user(stack) -> User:
    return register_and_login(stack.login_url)


@pytest.fixture
def other_user(stack) -> User:
    return register_and_login(stack.login_url)
