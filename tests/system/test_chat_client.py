"""The terminal client, run as a user runs it (`python -m chat_client ...`) against the real stack."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.lib import harness
from tests.lib.accounts import register_and_login, unique_name

pytestmark = pytest.mark.chat

PASSWORD = "correct horse 1"
LOGIN_HINT = "error: not logged in or session expired; run: python -m chat_client login USER"
MESSAGE_LINE = re.compile(r"\[\d\d:\d\d:\d\d\] #(\d+) ([A-Za-z0-9_.\-]+): (.*)")


class Terminal:
    """One user's shell: its own config folder, the stack's URLs in the environment."""

    def __init__(self, stack, config_home: Path):
        self.config_home = config_home
        self.username = ""
        self.env = {
            **os.environ,
            "CHATSYS_CHAT_URL": stack.chat_url,
            "CHATSYS_LOGIN_URL": stack.login_url,
            "CHATSYS_PROFILE_URL": stack.profile_url,
            "XDG_CONFIG_HOME": str(config_home),
            "PYTHONUTF8": "1",
        }

    @property
    def session_file(self) -> Path:
        return self.config_home / "chatsys" / "session.json"

    def run(self, *args: str, stdin: str | None = None, umask: int = -1, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "chat_client", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**self.env, **env},
            cwd=harness.ROOT,
            timeout=60,
            umask=umask,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        """The client in the background, where Ctrl-C (SIGINT) stops it as in a terminal.

        A child inherits an ignored SIGINT, and Python then keeps ignoring it: a suite run as
        a background job of a non-interactive shell (`make test &`) would pass that on. A
        handler installed here instead is reset to the default at exec, as a terminal's
        foreground job has it."""
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "chat_client", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**self.env, **env},
                cwd=harness.ROOT,
            )
        finally:
            signal.signal(signal.SIGINT, previous)

    def ok(self, *args: str, stdin: str | None = None, **env: str) -> str:
        done = self.run(*args, stdin=stdin, umask=-1, **env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def sign_up(self) -> Terminal:
        self.username = unique_name()
        self.ok("register", self.username, "--password-stdin", stdin=PASSWORD + "\n")
        self.ok("login", self.username, "--password-stdin", stdin=PASSWORD + "\n")
        return self


def failed_with(done: subprocess.CompletedProcess, line: str) -> bool:
    """Non-zero exit and exactly this one line on stderr: no traceback, no noise."""
    return done.returncode not in (0, None) and done.stderr == line + "\n" and "Traceback" not in done.stdout


def message_lines(output: str) -> list[tuple[int, str, str]]:
    return [(int(seq), author, text) for seq, author, text in MESSAGE_LINE.findall(output)]


@pytest.fixture
def terminal(stack, tmp_path) -> Terminal:
    return Terminal(stack, tmp_path / "config")


@pytest.fixture
def alice(stack, tmp_path) -> Terminal:
    return Terminal(stack, tmp_path / "alice-config").sign_up()


def new_room(terminal: Terminal) -> str:
    room = unique_name("room-")
    assert terminal.ok("create-room", room) == f"created room {room}\n"
    return room


def test_login_keeps_the_token_in_a_file_only_its_owner_can_read(terminal, stack):
    username = unique_name()
    registered = terminal.run("register", username, "--password-stdin", stdin=PASSWORD + "\n")
    assert registered.returncode == 0 and username in registered.stdout
    # A folder left readable by others is narrowed, and a permissive umask changes nothing.
    (terminal.config_home / "chatsys").mkdir(parents=True, mode=0o755)
    logged_in = terminal.run("login", username, "--password-stdin", stdin=PASSWORD + "\n", umask=0)
    assert logged_in.returncode == 0, logged_in.stderr
    assert f"logged in as {username}" in logged_in.stdout
    assert stat.S_IMODE(terminal.session_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(terminal.session_file.parent.stat().st_mode) == 0o700
    token = json.loads(terminal.session_file.read_text())["token"]
    validated = requests.get(f"{stack.login_url}/validate", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert validated.json()["username"] == username
    assert terminal.ok("whoami").startswith(f"{username} (session valid until ")


def test_a_taken_name_and_a_wrong_password_are_one_line_errors(terminal, alice):
    taken = terminal.run("register", alice.username, "--password-stdin", stdin=PASSWORD + "\n")
    assert failed_with(taken, f"error: The username {alice.username!r} is taken.")
    wrong = terminal.run("login", alice.username, "--password-stdin", stdin="not the password\n")
    assert failed_with(wrong, "error: Unknown username or wrong password.")
    assert not terminal.session_file.exists()


def test_a_created_room_is_listed_with_its_message_count(alice):
    room = new_room(alice)
    alice.ok("send", room, "hello")
    listing = alice.ok("rooms").splitlines()
    assert listing[0].split() == ["ROOM", "MESSAGES", "CREATED"]
    rows = {line.split()[0]: line.split()[1] for line in listing[1:]}
    assert rows["lobby"].isdigit() and rows[room] == "1"
    again = alice.run("create-room", room)
    assert failed_with(again, f"error: A room named {room!r} exists already.")


def test_sent_messages_read_back_in_order_exactly_as_typed(alice):
    room = new_room(alice)
    sent = alice.ok("send", room, "hello", "world")
    assert message_lines(sent) == [(1, alice.username, "hello world")]
    alice.ok("send", room, "héllo 👋 ünïcode")
    alice.ok("send", room, "third")
    assert message_lines(alice.ok("read", room)) == [
        (1, alice.username, "hello world"),
        (2, alice.username, "héllo 👋 ünïcode"),
        (3, alice.username, "third"),
    ]
    assert message_lines(alice.ok("read", room, "--after", "1", "--limit", "1")) == [
        (2, alice.username, "héllo 👋 ünïcode")
    ]
    missing = alice.run("read", unique_name("no-such-room-"))
    assert missing.returncode == 1 and missing.stderr.startswith("error: No room named")
    not_a_room_name = alice.run("read", "a/b")
    assert not_a_room_name.returncode == 2 and "room names are 1 to 64 characters" in not_a_room_name.stderr


def test_a_message_cannot_send_escape_sequences_to_the_reader_terminal(alice):
    room = new_room(alice)
    alice.ok("send", room, "\x1b[2J\rspoof")
    shown = alice.ok("read", room)
    assert "\x1b" not in shown and "\r" not in shown
    assert message_lines(shown) == [(1, alice.username, "\\x1b[2J\\x0dspoof")]


class _ProxyInThread(ThreadingHTTPServer):
    """A proxy on a free loopback port, serving in a thread while its `with` block runs."""

    daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class AnswerLosingProxy(_ProxyInThread):
    """Forwards to the chat service, but loses the answer to the first POST after it was
    stored, as a dropped connection would: the client cannot know whether it was posted."""

    def __init__(self, target: str):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.target = target
        self.posts: list[str | None] = []


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AnswerLosingProxy

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() in ("authorization", "content-type", "idempotency-key")
        }
        answer = requests.request(self.command, self.server.target + self.path, data=body, headers=headers, timeout=10)
        if self.command == "POST":
            self.server.posts.append(self.headers.get("Idempotency-Key"))
            if len(self.server.posts) == 1:
                self.close_connection = True
                return
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _forward

    def log_message(self, *args) -> None:
        pass


def test_a_send_whose_answer_was_lost_is_retried_and_posted_once(alice, stack):
    room = new_room(alice)
    with AnswerLosingProxy(stack.chat_url) as proxy:
        sent = alice.ok("send", room, "only once", CHATSYS_CHAT_URL=proxy.url)
    assert len(proxy.posts) == 2 and proxy.posts[0] == proxy.posts[1] and proxy.posts[0]
    assert message_lines(sent) == [(1, alice.username, "only once")]
    assert message_lines(alice.ok("read", room)) == [(1, alice.username, "only once")]
    # Every message gets its own key: the same text sent again is a second message.
    alice.ok("send", room, "only once")
    assert [seq for seq, _, _ in message_lines(alice.ok("read", room))] == [1, 2]


class RefusingProxy(_ProxyInThread):
    """Answers the first POST itself with `status` and a Retry-After of an hour, without
    passing it on; forwards everything else to the chat service."""

    def __init__(self, target: str, status: int):
        super().__init__(("127.0.0.1", 0), _RefusingHandler)
        self.target, self.status = target, status
        self.posts: list[str | None] = []


class _RefusingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RefusingProxy

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.posts.append(self.headers.get("Idempotency-Key"))
        if len(self.server.posts) == 1:
            status = self.server.status
            content = json.dumps(
                {"type": "about:blank", "title": "Refused", "status": status, "detail": f"refused with {status}"}
            ).encode()
            kind, extra = "application/problem+json", {"Retry-After": "3600"}
        else:
            headers = {
                name: value
                for name, value in self.headers.items()
                if name.lower() in ("authorization", "content-type", "idempotency-key")
            }
            answer = requests.post(self.server.target + self.path, data=body, headers=headers, timeout=10)
            status, content, kind, extra = answer.status_code, answer.content, answer.headers["Content-Type"], {}
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(content)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args) -> None:
        pass


def test_a_5xx_send_is_retried_with_the_same_key_and_an_hour_of_retry_after_is_cut_short(alice, stack):
    room = new_room(alice)
    with RefusingProxy(stack.chat_url, 503) as proxy:
        # Within the 60 s the terminal waits: the client caps Retry-After (at 5 s).
        sent = alice.ok("send", room, "after a 503", CHATSYS_CHAT_URL=proxy.url)
    assert len(proxy.posts) == 2 and proxy.posts[0] == proxy.posts[1] and proxy.posts[0]
    assert message_lines(sent) == [(1, alice.username, "after a 503")]


def test_a_429_send_is_not_retried(alice, stack):
    room = new_room(alice)
    with RefusingProxy(stack.chat_url, 429) as proxy:
        refused = alice.run("send", room, "too soon", CHATSYS_CHAT_URL=proxy.url)
    assert failed_with(refused, "error: refused with 429 (try again in 3600 s)")
    assert len(proxy.posts) == 1
    assert message_lines(alice.ok("read", room)) == []


def read_lines_into(stream, lines: queue.Queue) -> threading.Thread:
    def pump():
        for line in stream:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return reader


def follow_while_bob_posts(alice, stack, room: str, texts: tuple[str, ...], *args: str, **env: str) -> tuple[str, str]:
    """Run `follow ROOM ARGS` until it exits, posting `texts` as another user once it has
    shown its first line; what it printed, and its standard error."""
    bob = register_and_login(stack.login_url)
    with alice.start("follow", room, *args, **env) as follower:  # closes its pipes at the end
        lines: queue.Queue = queue.Queue()
        reader = read_lines_into(follower.stdout, lines)
        try:
            first = lines.get(timeout=6)  # follow is running once it has shown the newest message
            for text in texts:
                posted = requests.post(
                    f"{stack.chat_url}/rooms/{room}/messages", json={"text": text}, headers=bob.auth, timeout=10
                )
                assert posted.status_code == 201, posted.text
            assert follower.wait(timeout=30) == 0
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
        reader.join(timeout=5)
        return first + "".join(lines.get() for _ in range(lines.qsize())), follower.stderr.read()


def test_follow_prints_messages_from_others_live_and_in_order(alice, stack):
    room = new_room(alice)
    for text in ("old one", "old two", "before"):
        alice.ok("send", room, text)
    output, errors = follow_while_bob_posts(
        alice,
        stack,
        room,
        ("first from bob", "second from bob"),
        "--last",
        "1",
        "--interval",
        "0.2",
        "--max-seconds",
        "6",
    )
    lines = message_lines(output)
    assert [(seq, text) for seq, _, text in lines] == [(3, "before"), (4, "first from bob"), (5, "second from bob")]
    assert lines[0][1] == alice.username and lines[1][1] == lines[2][1] != alice.username
    assert "Traceback" not in errors


class CountingProxy(_ProxyInThread):
    """Forwards GETs to the chat service and counts them; with `v1`, it answers `wait` with
    a 400 problem, as a chat server of contract v1 that checks its parameters may."""

    def __init__(self, target: str, v1: bool):
        super().__init__(("127.0.0.1", 0), _CountingHandler)
        self.target, self.v1 = target, v1
        self.reads: list[str] = []


class _CountingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingProxy

    def do_GET(self) -> None:
        self.server.reads.append(self.path)
        if self.server.v1 and "wait=" in self.path:
            status, body, kind = (
                400,
                b'{"type":"about:blank","title":"Bad Request","status":400}',
                "application/problem+json",
            )
        else:
            answer = requests.get(
                self.server.target + self.path, headers={"Authorization": self.headers["Authorization"]}, timeout=60
            )
            status, body, kind = answer.status_code, answer.content, answer.headers.get("Content-Type", "")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("v1", [False, True], ids=["long-polls", "v1-server-polls"])
def test_follow_long_polls_and_falls_back_to_polling_on_a_v1_server(alice, stack, v1):
    room = new_room(alice)
    alice.ok("send", room, "before")
    with CountingProxy(stack.chat_url, v1) as proxy:
        output, errors = follow_while_bob_posts(
            alice,
            stack,
            room,
            ("from bob",),
            "--last",
            "1",
            "--interval",
            "0.2",
            "--max-seconds",
            "5",
            CHATSYS_CHAT_URL=proxy.url,
        )
    assert [(seq, text) for seq, _, text in message_lines(output)] == [(1, "before"), (2, "from bob")]
    waits = [path for path in proxy.reads if "wait=" in path]
    if v1:
        assert len(waits) == 1 and len(proxy.reads) > 10  # one refused wait, then plain polls
        assert "polling every" in errors
    else:
        assert len(proxy.reads) <= 5 and len(waits) == len(proxy.reads) - 1  # held requests, not polls


def test_follow_stops_cleanly_on_ctrl_c(alice):
    room = new_room(alice)
    alice.ok("send", room, "hello")
    with alice.start("follow", room, "--interval", "0.2") as follower:  # closes its pipes at the end
        lines: queue.Queue = queue.Queue()
        reader = read_lines_into(follower.stdout, lines)
        try:
            assert "hello" in lines.get(timeout=10)
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=15) == 0
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
        reader.join(timeout=5)
        assert "Traceback" not in follower.stderr.read()


def test_profile_edit_then_profile_shows_it(alice, stack):
    never_written = alice.run("profile")
    assert failed_with(never_written, f"error: No profile for {alice.username!r}.")
    edited = alice.ok(
        "profile-edit",
        "--display-name",
        "Alice Liddell",
        "--bio",
        "down the rabbit hole",
        "--avatar-url",
        "https://example.org/alice.png",
    )
    shown = alice.ok("profile")
    assert edited == shown
    assert f"username:     {alice.username}\n" in shown
    assert "display name: Alice Liddell\n" in shown
    assert "bio:          down the rabbit hole\n" in shown
    assert "avatar url:   https://example.org/alice.png\n" in shown
    alice.ok("profile-edit", "--bio", "")
    assert "bio:          \n" in alice.ok("profile") and "display name: Alice Liddell\n" in alice.ok("profile")

    bob = register_and_login(stack.login_url)
    written = requests.put(
        f"{stack.profile_url}/profiles/{bob.username}", json={"display_name": "Bob"}, headers=bob.auth, timeout=10
    )
    assert written.status_code == 200, written.text
    assert "display name: Bob\n" in alice.ok("profile", bob.username)

    assert alice.run("profile-edit").returncode == 2
    bad_url = alice.run("profile-edit", "--avatar-url", "ftp://example.org/a.png")
    assert bad_url.returncode == 1 and bad_url.stderr.startswith("error: ") and bad_url.stderr.count("\n") == 1


def test_after_logout_commands_fail_with_a_one_line_login_hint(alice, stack):
    saved = alice.session_file.read_text()
    token = json.loads(saved)["token"]
    assert alice.ok("logout") == f"logged out {alice.username}\n"
    assert not alice.session_file.exists()
    for command in (["rooms"], ["whoami"], ["send", "lobby", "hi"], ["follow", "lobby", "--max-seconds", "1"]):
        assert failed_with(alice.run(*command), LOGIN_HINT), command
    # The token is dead on the server too, so a copy of it is worth nothing.
    validated = requests.get(f"{stack.login_url}/validate", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert validated.status_code == 401
    alice.session_file.write_text(saved)
    assert failed_with(alice.run("whoami"), LOGIN_HINT)
    assert alice.ok("logout") == f"logged out {alice.username}\n"


def test_an_unreachable_service_is_a_one_line_error(alice, terminal):
    dead = f"http://127.0.0.1:{harness.free_port()}"
    assert failed_with(alice.run("rooms", CHATSYS_CHAT_URL=dead), f"error: cannot reach the chat service at {dead}")
    assert failed_with(
        alice.run("--chat-url", dead, "send", "lobby", "hi"), f"error: cannot reach the chat service at {dead}"
    )
    assert failed_with(
        alice.run("profile", "--profile-url", dead + "/"), f"error: cannot reach the profile service at {dead}"
    )
    assert failed_with(
        terminal.run("login", "nobody", "--password-stdin", stdin=PASSWORD + "\n", CHATSYS_LOGIN_URL=dead),
        f"error: cannot reach the login service at {dead}",
    )
