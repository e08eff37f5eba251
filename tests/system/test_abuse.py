"""Hostile input: slow and oversized requests, floods of bad tokens, password guessing,
timing, per-address rate limits and awkward Unicode. Every refusal is a prompt error
answer (a problem where our code writes it), and ordinary users keep being served.

One kind of answer is not a problem, and the tests say so precisely: HAProxy 2.6 writes
its built-in HTML page for the errors its HTTP parser raises before any rule runs (headers
that overflow its buffer or its 101 fields, or do not arrive within `timeout http-request`).
"""

from __future__ import annotations

import json
import random
import re
import secrets
import selectors
import shutil
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests

from tests.conftest import service_env
from tests.lib import harness
from tests.lib.accounts import register_and_login, unique_name
from tests.lib.contract import assert_problem

# conf/haproxy/haproxy.cfg and conf/gunicorn.conf.py
HTTP_REQUEST_TIMEOUT = 5.0
MAX_BODY = 32 * 1024
# tests/lib/harness.py and service_kit/config.py defaults
LOGIN_MAX_FAILURES = 5


# --- raw HTTP: what a hostile client sends is not what requests would --------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the first byte sent to the first byte answered
    raw_head: str = field(repr=False, default="")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self):
        return json.loads(self.body)


def read_response(sock: socket.socket, started: float, timeout: float) -> RawResponse:
    sock.settimeout(timeout)
    data, first = b"", None
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no complete answer within {timeout} s; got {data[:200]!r}") from None
        except ConnectionResetError:
            chunk = b""
        if first is None and chunk:
            first = time.monotonic() - started
        data += chunk
        head, separator, body = data.partition(b"\r\n\r\n")
        if separator:
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
            }
            length = int(headers.get("content-length", -1))
            if 0 <= length <= len(body) or (not chunk and length < 0):
                status = int(lines[0].split()[1])
                assert first is not None  # a head arrived, so a first byte did
                return RawResponse(
                    status, headers, body[:length] if length >= 0 else body, first, head.decode("latin-1")
                )
        if not chunk:
            raise AssertionError(f"connection closed without a complete answer: {data[:200]!r}")


def exchange(port: int, request: bytes, timeout: float = 15) -> RawResponse:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything we send
        return read_response(sock, started, timeout)


def request_bytes(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"] + [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, size: int = 4096) -> bytes:
    pieces = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)]
    return b"".join(pieces) + b"0\r\n\r\n"


def haproxy_version() -> tuple[int, int]:
    output = subprocess.run(
        [shutil.which("haproxy") or "/usr/sbin/haproxy", "-v"], capture_output=True, text=True
    ).stdout
    version = re.search(r"version (\d+)\.(\d+)", output)
    assert version, f"haproxy -v printed no version: {output!r}"
    major, minor = version.groups()
    return int(major), int(minor)


def assert_haproxy_parser_error(response: RawResponse, status: int) -> None:
    """An error HAProxy's HTTP parser raises before any rule: 2.6 sends its built-in page
    whatever http-error says; from 3.3 (commit d252ec2be, issue #3032) configured errors."""
    assert response.status == status, response.raw_head
    assert response.headers.get("connection", "").lower() == "close"
    if haproxy_version() >= (3, 3) and response.content_type.startswith("application/problem+json"):
        assert response.json()["status"] == status
    else:
        assert response.content_type == "text/html"
        assert response.body.startswith(f"<html><body><h1>{status} ".encode())


def assert_raw_problem(response: RawResponse, status: int) -> dict:
    assert response.status == status, f"{response.raw_head}\n{response.body[:300]!r}"
    assert response.content_type.startswith("application/problem+json"), response.raw_head
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"] and isinstance(body["detail"], str)
    return body


def assert_instance(response: RawResponse, instance: str) -> None:
    assert response.headers.get("x-instance") == instance, response.raw_head


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def entry(processes, stack):
    """An HAProxy of our own in front of the session's chat servers."""
    balancer = harness.start_haproxy(processes, [chat.port for chat in stack.chat_servers])
    harness.wait_until(lambda: list(balancer.server_states().values()).count("UP") == 3, 15, "three servers up")
    return balancer


def services_direct(stack, user) -> dict[str, tuple[int, str, str, dict]]:
    """For each service straight, without HAProxy: port, method and path of a JSON write."""
    room = new_room(stack.chat_url, user)
    return {
        "login": (stack.login.port, "POST", "/users", {}),
        "profile": (stack.profile.port, "PUT", f"/profiles/{user.username}", user.auth),
        "chat": (stack.chat_servers[0].port, "POST", f"/rooms/{room}/messages", user.auth),
    }


def new_room(url: str, user) -> str:
    name = unique_name("room-")
    response = requests.post(f"{url}/rooms", json={"name": name}, headers=user.auth, timeout=10)
    assert response.status_code == 201, response.text
    return name


class KeepServing:
    """A normal user reading through the entry point in the background; every answer counts."""

    def __init__(self, url: str, user, interval: float = 0.2):
        self.url, self.user, self.interval = url, user, interval
        self.statuses: Counter = Counter()
        self.slowest = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        session = requests.Session()
        for _ in range(10000):
            if self.stop.is_set():
                return
            started = time.monotonic()
            try:
                self.statuses[session.get(f"{self.url}/rooms", headers=self.user.auth, timeout=15).status_code] += 1
            except requests.RequestException as error:
                self.statuses[type(error).__name__] += 1
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


# --- slow clients -------------------------------------------------------------------------


def trickle_headers(port: int, results: list, limit: float = 15.0) -> None:
    """Slowloris: a request line, then one more header line a second, never the blank line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /rooms HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        selector = selectors.DefaultSelector()
        selector.register(sock, selectors.EVENT_READ)
        for number in range(int(limit)):
            if selector.select(timeout=1.0):
                break
            try:
                sock.sendall(f"X-Slow-{number}: still typing\r\n".encode())
            except OSError:
                break
        selector.close()
        results.append(read_response(sock, started, timeout=max(1.0, limit - (time.monotonic() - started))))


@pytest.mark.local
@pytest.mark.chat
def test_slowloris_gets_408_within_the_request_timeout_while_users_are_served(entry, stack):
    user = register_and_login(stack.login_url)
    results: list[RawResponse] = []
    slow = [threading.Thread(target=trickle_headers, args=(entry.port, results), daemon=True) for _ in range(30)]
    with KeepServing(entry.url, user) as reader:
        for thread in slow:
            thread.start()
        for thread in slow:
            thread.join(30)
    assert len(results) == 30, "a slow connection got no answer"
    for response in results:
        assert_haproxy_parser_error(response, 408)
        # A header line a second does not extend the deadline.
        assert response.seconds < HTTP_REQUEST_TIMEOUT + 4, f"408 after {response.seconds:.1f} s"
    assert reader.statuses[200] >= 10 and set(reader.statuses) == {200}, reader.statuses


@pytest.mark.local
@pytest.mark.chat
def test_a_body_sent_too_slowly_gets_a_408_problem_and_never_reaches_a_server(entry, stack):
    user = register_and_login(stack.login_url)
    room = new_room(entry.url, user)
    body = json.dumps({"text": "slowly"}).encode()
    with socket.create_connection(("127.0.0.1", entry.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(
            request_bytes(
                "POST",
                f"/rooms/{room}/messages",
                {**user.auth, "Content-Type": "application/json", "Content-Length": str(len(body))},
            )
        )
        selector = selectors.DefaultSelector()
        selector.register(sock, selectors.EVENT_READ)
        for byte in body[:10]:  # one byte a second, never the whole body
            if selector.select(timeout=1.0):
                break
            sock.sendall(bytes([byte]))
        selector.close()
        response = read_response(sock, started, timeout=10)
    assert_raw_problem(response, 408)
    assert response.seconds < HTTP_REQUEST_TIMEOUT + 4, f"408 after {response.seconds:.1f} s"
    assert requests.get(f"{entry.url}/rooms/{room}/messages", headers=user.auth, timeout=10).json()["messages"] == []


@pytest.mark.local
def test_a_service_reached_directly_cuts_stalled_requests_and_keeps_serving(stack):
    """Login and profile are reached without HAProxy: gunicorn's read timeout
    (GUNICORN_READ_TIMEOUT, 3 s) frees the threads that slow connections hold."""
    target = stack.login.port
    sockets = []
    try:
        for _ in range(12):  # more than the harness's 8 threads
            sock = socket.create_connection(("127.0.0.1", target), timeout=15)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sockets.append(sock)
        started = time.monotonic()
        assert requests.get(f"{stack.login_url}/health", timeout=12).status_code == 200
        assert time.monotonic() - started < 12
        for sock in sockets:  # each stalled connection was closed by the service
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in sockets:
            sock.close()
        # HAProxy's health checks may have found login busy meanwhile and marked it down:
        # the next test registers through HAProxy, so leave the stack as it was found.
        harness.wait_until(
            lambda: stack.balancer.server_states("login").get("login") == "UP", 15, "HAProxy to see login up again"
        )


# --- oversized bodies ----------------------------------------------------------------------


@pytest.mark.local
@pytest.mark.chat
def test_a_declared_oversized_body_gets_413_before_it_is_sent(entry, stack, user):
    headers = {**user.auth, "Content-Type": "application/json", "Content-Length": str(10 * 1024 * 1024)}
    room = new_room(entry.url, user)
    at_entry = exchange(entry.port, request_bytes("POST", f"/rooms/{room}/messages", headers, b'{"text": "'))
    assert_raw_problem(at_entry, 413)
    assert at_entry.seconds < HTTP_REQUEST_TIMEOUT - 1, "HAProxy waited for the body before refusing it"
    for port, method, path, _ in services_direct(stack, user).values():
        assert_raw_problem(exchange(port, request_bytes(method, path, headers, b'{"text": "')), 413)


@pytest.mark.local
@pytest.mark.chat
def test_an_oversized_chunked_body_gets_413_and_a_small_one_is_accepted(entry, stack, user):
    """Without a Content-Length the size is only known while reading: still 413, not 400."""
    big = json.dumps({"text": "a" * (MAX_BODY + 1000)}).encode()
    room = new_room(entry.url, user)
    headers = {**user.auth, "Content-Type": "application/json", "Transfer-Encoding": "chunked", "Connection": "close"}
    assert_raw_problem(
        exchange(entry.port, request_bytes("POST", f"/rooms/{room}/messages", headers, chunked(big))), 413
    )
    for name, (port, method, path, auth) in services_direct(stack, user).items():
        raw_headers = {
            **auth,
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
            "Connection": "close",
        }
        body = json.dumps(
            {"username": unique_name(), "password": "p" * MAX_BODY}
            if name == "login"
            else {"bio": "b" * MAX_BODY}
            if name == "profile"
            else {"text": "t" * MAX_BODY}
        ).encode()
        assert_raw_problem(exchange(port, request_bytes(method, path, raw_headers, chunked(body))), 413)
    small = exchange(
        entry.port,
        request_bytes(
            "POST", f"/rooms/{room}/messages", headers, chunked(json.dumps({"text": "chunked but small"}).encode())
        ),
    )
    assert small.status == 201, small.body
    assert small.json()["text"] == "chunked but small"


# --- oversized headers and request lines ---------------------------------------------------


def oversized_requests(token: str) -> dict[str, bytes]:
    auth = {"Authorization": f"Bearer {token}", "Connection": "close"}
    return {
        "9 KiB header": request_bytes("GET", "/rooms", {**auth, "X-Big": "a" * 9 * 1024}),
        "64 KiB header": request_bytes("GET", "/rooms", {**auth, "X-Big": "a" * 64 * 1024}),
        "150 header fields": request_bytes("GET", "/rooms", {**auth, **{f"X-Field-{n}": "v" for n in range(150)}}),
        "5,000 character target": request_bytes("GET", "/rooms?pad=" + "a" * 5000, auth),
    }


@pytest.mark.local
@pytest.mark.chat
def test_oversized_headers_at_the_entry_point_are_refused_precisely(entry, stack, user):
    answers = {name: exchange(entry.port, raw) for name, raw in oversized_requests(user.token).items()}
    # Within HAProxy's buffer, its rules refuse what gunicorn would, as problems.
    for name, status in (("9 KiB header", 431), ("5,000 character target", 414)):
        assert_raw_problem(answers[name], status)
        assert_instance(answers[name], f"chat@{entry.port}")
    # Beyond its buffer (48 KiB, tune.bufsize) or its 101 header fields, its parser refuses with 400.
    assert_haproxy_parser_error(answers["64 KiB header"], 400)
    assert_haproxy_parser_error(answers["150 header fields"], 400)
    assert requests.get(f"{entry.url}/rooms", headers=user.auth, timeout=10).status_code == 200


@pytest.mark.local
def test_huge_or_numerous_headers_sent_straight_to_a_service_get_431_problems(stack, user):
    """Gunicorn refuses them before Flask sees the request (service_kit/gunicorn_errors.py
    makes that answer a problem too). tests/contract/test_common_contract.py covers a long request
    line and a 10 KB header; these are the extremes."""
    services = {"login": stack.login, "profile": stack.profile, "chat": stack.chat_servers[0]}
    requests_by_name = oversized_requests(user.token)
    for name, service in services.items():
        for what in ("64 KiB header", "150 header fields"):
            answer = exchange(service.port, requests_by_name[what])
            assert_raw_problem(answer, 431)
            assert_instance(answer, f"{name}@{service.port}")
            assert answer.headers.get("connection", "").lower() == "close"
        assert requests.get(f"{service.url}/health", timeout=10).status_code == 200, name


# --- a flood of bad tokens -----------------------------------------------------------------


@pytest.fixture(scope="module")
def counted_login(processes, database):
    """A login service that logs every request, and a chat server that asks only it."""
    access_log = processes.dir / f"login-access-{uuid.uuid4().hex[:6]}.log"
    login = harness.start_service(processes, "login", service_env(database, GUNICORN_ACCESS_LOG=str(access_log)))
    chat = harness.start_service(processes, "chat", service_env(database, login.url))
    return login, chat, access_log


def validate_calls(access_log, chat) -> int:
    time.sleep(0.3)  # let the access log flush
    return sum(
        1 for line in access_log.read_text().splitlines() if "/validate" in line and f"chatsys-chat@{chat.port}" in line
    )


@pytest.mark.local
@pytest.mark.chat
def test_a_flood_of_bad_tokens_costs_one_check_each_at_most_while_a_user_is_served(counted_login):
    login, chat, access_log = counted_login
    user = register_and_login(login.url)
    well_formed = [secrets.token_urlsafe(32) for _ in range(100)]
    malformed = ["", "!" * 20, "a b", "x" * 600, "tok\u00e9n".encode().decode("latin-1")] * 10
    flood = [token for token in well_formed for _ in range(3)]
    random.Random(7).shuffle(flood)
    assert requests.get(f"{chat.url}/rooms", headers=user.auth, timeout=10).status_code == 200  # now cached
    before = validate_calls(access_log, chat)
    answers: Counter = Counter()
    not_problems: list[str] = []
    lock = threading.Lock()

    def send(tokens):
        session = requests.Session()
        for token in tokens:
            response = session.get(
                f"{chat.url}/rooms/lobby/messages", headers={"Authorization": f"Bearer {token}"}, timeout=15
            )
            try:
                assert_problem(response, response.status_code)
            except AssertionError as error:
                with lock:
                    not_problems.append(str(error))
            with lock:
                answers[(token in well_formed, response.status_code)] += 1

    with KeepServing(chat.url, user, interval=0.1) as reader:
        everything = flood + malformed
        senders = [threading.Thread(target=send, args=(everything[i::10],), daemon=True) for i in range(10)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(120)
    calls = validate_calls(access_log, chat) - before
    unavailable = answers[(True, 503)]
    print(
        f"\n{len(flood)} well-formed and {len(malformed)} malformed bad tokens: {dict(answers)}, "
        f"{calls} /validate calls; the user's answers {dict(reader.statuses)}, slowest {reader.slowest:.2f} s"
    )
    assert not not_problems, not_problems[:3]
    assert set(answers) <= {(True, 401), (True, 503), (False, 401)}, answers
    assert answers[(False, 401)] == len(malformed)
    # Each distinct token is asked about once; a repeat is answered from the refusal cache.
    # Only a check that could not be made (503: too many in flight) may be asked again.
    assert calls <= len(well_formed) + unavailable, f"{calls} calls for {len(well_formed)} distinct tokens"
    assert set(reader.statuses) == {200}, reader.statuses


# --- guessing passwords, and what the answer time tells -----------------------------------


@pytest.mark.local
def test_parallel_password_guesses_are_cut_off_after_a_few_beyond_the_limit(stack):
    victim = register_and_login(stack.login_url)
    bystander = register_and_login(stack.login_url)
    barrier = threading.Barrier(20)
    answers: list[requests.Response] = []

    def guess(number):
        barrier.wait()
        answers.append(
            requests.post(
                f"{stack.login_url}/login",
                json={"username": victim.username, "password": f"guess number {number}"},
                timeout=30,
            )
        )

    guessers = [threading.Thread(target=guess, args=(n,), daemon=True) for n in range(20)]
    for thread in guessers:
        thread.start()
    bystander_login = requests.post(
        f"{stack.login_url}/login", json={"username": bystander.username, "password": bystander.password}, timeout=30
    )
    for thread in guessers:
        thread.join(60)
    codes = Counter(answer.status_code for answer in answers)
    print(f"\n20 parallel wrong passwords: {dict(codes)}")
    assert set(codes) <= {401, 429} and sum(codes.values()) == 20, codes
    for answer in answers:
        assert_problem(answer, answer.status_code)
    # Each attempt is recorded before its password is checked and counted after: however
    # many arrive at once, at most LOGIN_MAX_FAILURES reach the password check.
    assert codes[401] <= LOGIN_MAX_FAILURES and codes[429] >= 20 - LOGIN_MAX_FAILURES, codes
    assert bystander_login.status_code == 200
    right_password = requests.post(
        f"{stack.login_url}/login", json={"username": victim.username, "password": victim.password}, timeout=30
    )
    assert_problem(right_password, 429)


def test_unknown_user_and_wrong_password_take_about_as_long(stack):
    """A leak check, not a speed check: both run the slow hash, so neither answer tells
    whether the username exists. Medians of interleaved attempts, each on a fresh name so
    the failure limit never cuts one short."""
    known = [register_and_login(stack.login_url) for _ in range(10)]
    unknown_times, wrong_times = [], []
    for user in known:
        for username, times in ((unique_name(), unknown_times), (user.username, wrong_times)):
            started = time.monotonic()
            response = requests.post(
                f"{stack.login_url}/login", json={"username": username, "password": "not it at all"}, timeout=30
            )
            times.append(time.monotonic() - started)
            assert_problem(response, 401)
    ratio = statistics.median(unknown_times) / statistics.median(wrong_times)
    print(
        f"\nmedian login answer: unknown user {statistics.median(unknown_times) * 1000:.0f} ms, "
        f"wrong password {statistics.median(wrong_times) * 1000:.0f} ms, ratio {ratio:.2f}"
    )
    assert 0.5 <= ratio <= 2.0, ratio


# --- per-address rate limit at HAProxy ------------------------------------------------------


def get_from(port: int, source: str, path: str = "/health") -> RawResponse:
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
        started = time.monotonic()
        sock.sendall(request_bytes("GET", path, {"Connection": "close"}))
        return read_response(sock, started, timeout=15)


@pytest.mark.local
@pytest.mark.chat
def test_rate_limit_per_address_answers_429_problems_past_the_limit_and_spares_others(processes, stack):
    limited = harness.start_haproxy(processes, [chat.port for chat in stack.chat_servers], {"HAPROXY_RATE_LIMIT": "20"})
    harness.wait_until(lambda: list(limited.server_states().values()).count("UP") == 3, 15, "three servers up")
    answers = [get_from(limited.port, "127.0.0.1") for _ in range(30)]
    statuses = [answer.status for answer in answers]
    # 30 requests take well under the 10 s window: the first 20 pass, the rest are refused.
    assert statuses == [200] * 20 + [429] * 10, statuses
    for refused in answers[20:]:
        assert_raw_problem(refused, 429)
        assert int(refused.headers["retry-after"]) > 0
    # Another client address has its own count.
    assert get_from(limited.port, "127.0.0.2").status == 200


# --- Unicode --------------------------------------------------------------------------------

AWKWARD_TEXTS = {
    "emoji and skin tones": "😀 👍🏽 🇳🇴 🏳️‍🌈",
    "zero-width joiner family": "👩\u200d👩\u200d👧\u200d👦",
    "zero-width space, non-joiner, word joiner": "a\u200bb\u200cc\u2060d",
    "right-to-left Hebrew and Arabic": "שלום עולם — مرحبا بالعالم",
    "bidi overrides and marks": "\u202eevil\u202c \u200f\u200e\u2067isolate\u2069",
    "combining marks, not normalised": "e\u0301 \u00e9 Z\u0351\u0307\u0310a\u0336l\u0337g\u0338o",
    "decomposed Hangul and precomposed": "\u1100\u1161 \uac00",
    "astral letters": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 𠜎",
    "byte order mark and noncharacters": "\ufeffbom \ufffe\uffff \U0010ffff",
    "line and paragraph separators": "one\u2028two\u2029three",
    "controls other than NUL": "tab\there\nnew\rline \x7f \x85 \x1b[31m",
    "variation selectors": "\u2764\ufe0f \u2764\ufe0e",
    "JSON-looking and escapes": '{"$ne": null} \\u0000 </script>',
}


@pytest.mark.chat
def test_awkward_unicode_round_trips_exactly_through_post_and_get(stack, user):
    room = new_room(stack.chat_url, user)
    posted = []
    for name, text in AWKWARD_TEXTS.items():
        response = requests.post(
            f"{stack.chat_url}/rooms/{room}/messages", json={"text": text}, headers=user.auth, timeout=10
        )
        assert response.status_code == 201, f"{name}: {response.text}"
        assert response.json()["text"] == text, name
        posted.append(text)
    # The same again as raw UTF-8 instead of \u escapes.
    raw = json.dumps({"text": "".join(AWKWARD_TEXTS.values())[:2000]}, ensure_ascii=False).encode("utf-8")
    response = requests.post(
        f"{stack.chat_url}/rooms/{room}/messages",
        data=raw,
        headers={**user.auth, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    posted.append("".join(AWKWARD_TEXTS.values())[:2000])
    stored = requests.get(
        f"{stack.chat_url}/rooms/{room}/messages", params={"after": 0, "limit": 200}, headers=user.auth, timeout=10
    ).json()["messages"]
    assert [message["text"] for message in stored] == posted


@pytest.mark.chat
@pytest.mark.parametrize(
    "raw_text, expected",
    [
        (b'"\\ud800"', None),  # a lone high surrogate
        (b'"\\udc00\\ud800"', None),  # a pair in the wrong order
        (b'"\\ud83d\\ude00"', "😀"),  # a proper pair: one code point
        (b'"\xed\xa0\x80"', None),  # a surrogate encoded in UTF-8 (invalid UTF-8)
        (b'"\xc0\xaf"', None),  # an overlong encoding
        (b'"\xff"', None),  # not UTF-8 at all
    ],
)
def test_surrogates_and_invalid_utf8_are_refused_or_round_trip_exactly(stack, user, raw_text, expected):
    room = new_room(stack.chat_url, user)
    response = requests.post(
        f"{stack.chat_url}/rooms/{room}/messages",
        data=b'{"text": ' + raw_text + b"}",
        headers={**user.auth, "Content-Type": "application/json"},
        timeout=10,
    )
    stored = requests.get(f"{stack.chat_url}/rooms/{room}/messages", headers=user.auth, timeout=10).json()["messages"]
    if expected is None:
        assert_problem(response, 400)
        assert stored == []
    else:
        assert response.status_code == 201, response.text
        assert [message["text"] for message in stored] == [expected]
