"""The web client in a real browser: Debian's Chromium, headless, driven by Playwright, on a
real stack (FerretDB, login, profile, three chat servers, HAProxy serving web/ and routing
every API path on one port). Each person is a browser context of their own; every test ends
with no uncaught page error, no dialog and no report from the Content-Security-Policy."""

from __future__ import annotations

import subprocess

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from loadtest import harness
from tests.conftest import register_and_login, unique_name
from tests.web_stack import WebStack, WebUser, launch_chromium, start_web_stack, web_files

pytestmark = [pytest.mark.local, pytest.mark.chat]

PASSWORD = "correct horse 1"
# Types a browser needs for each kind of file: a module with any other type is refused under nosniff.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
POLICY = [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
]


@pytest.fixture(scope="module")
def web(database) -> WebStack:
    group = harness.ProcessGroup("chatsys-web-")
    try:
        yield start_web_stack(group, database)
    finally:
        group.close()


@pytest.fixture(scope="module")
def browser():
    playwright = sync_playwright().start()
    try:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def person(browser, web):
    """Opens the client in a fresh browser context; each one is checked at the end."""
    people: list[WebUser] = []

    def open_client(**context_options) -> WebUser:
        people.append(WebUser.open(browser, web.url, **context_options))
        return people[-1]

    yield open_client
    try:
        for someone in people:
            assert someone.page_errors == [], f"uncaught errors in the page: {someone.page_errors}"
            assert someone.dialogs == [], f"the page opened dialogs: {someone.dialogs}"
            assert someone.policy_reports == [], f"the policy refused something: {someone.policy_reports}"
    finally:
        for someone in people:
            someone.close()


def registered(web: WebStack) -> str:
    """A user made through the API, for the people who only need to log in."""
    return register_and_login(web.url, password=PASSWORD).username


def new_room_with(web: WebStack, texts: list[str]) -> str:
    author = register_and_login(web.url, password=PASSWORD)
    room = unique_name("web")
    assert requests.post(f"{web.url}/rooms", json={"name": room}, headers=author.auth, timeout=10).status_code == 201
    for text in texts:
        answer = requests.post(f"{web.url}/rooms/{room}/messages", json={"text": text}, headers=author.auth, timeout=10)
        assert answer.status_code == 201, answer.text
    return room


def signed_in(person, web: WebStack, **context_options) -> WebUser:
    someone = person(**context_options)
    someone.log_in(registered(web), PASSWORD)
    return someone


# --- HAProxy serves the files -------------------------------------------------------------------


def test_every_file_of_the_client_is_served_whole_with_its_type_and_headers(web):
    for path in web_files():
        url_path = "/" if path.name == "index.html" else "/" + path.relative_to(harness.ROOT / "web").as_posix()
        answer = requests.get(web.url + url_path, timeout=10)
        assert answer.status_code == 200, url_path
        assert answer.content == path.read_bytes(), f"{url_path} is not served whole"
        assert answer.headers["Content-Type"] == CONTENT_TYPES[path.suffix], url_path
        assert answer.headers["Cache-Control"] == "no-cache"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        policy = [part.strip() for part in answer.headers["Content-Security-Policy"].split(";")]
        assert set(POLICY) <= set(policy), policy
        assert not [part for part in policy if "unsafe" in part]


def test_the_api_answers_on_the_same_port_with_its_own_stricter_policy(web):
    user = register_and_login(web.url, password=PASSWORD)  # POST /users and /login through HAProxy
    validated = requests.get(f"{web.url}/validate", headers=user.auth, timeout=10)
    assert validated.status_code == 200 and validated.headers["X-Instance"].startswith("login@")
    missing = requests.get(f"{web.url}/profiles/{user.username}", headers=user.auth, timeout=10)
    assert missing.status_code == 404 and missing.headers["X-Instance"].startswith("profile@")
    rooms = requests.get(f"{web.url}/rooms", headers=user.auth, timeout=10)
    assert rooms.status_code == 200 and rooms.headers["X-Instance"].startswith("chat@")
    assert rooms.headers["X-Served-By"].startswith("chat")
    for answer in (validated, missing, rooms):
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")  # the services' own
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    # A POST to the page's address is no file: the chat tier answers it, as problem+json.
    posted = requests.post(web.url + "/", json={}, timeout=10)
    assert posted.headers["Content-Type"].startswith("application/problem+json")
    # An answer HAProxy makes itself gets the page's policy.
    too_long = requests.get(web.url + "/rooms?" + "x" * 4100, timeout=10)
    assert too_long.status_code == 414
    assert set(POLICY) <= {part.strip() for part in too_long.headers["Content-Security-Policy"].split(";")}


def test_haproxy_accepts_the_config_without_a_warning(web):
    """Each file must fit in one HAProxy buffer; one that does not gets a warning here."""
    result = subprocess.run(
        [
            harness.require_tool("haproxy", "/usr/sbin/haproxy"),
            "-c",
            "-f",
            str(harness.ROOT / "conf/haproxy/haproxy.cfg"),
        ],
        env=web.balancer.process.env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr


# --- people using it ----------------------------------------------------------------------------


def test_a_message_posted_in_one_browser_appears_live_in_another(person, web):
    alice = person()
    alice_name = unique_name("a")
    alice.register_and_log_in(alice_name, PASSWORD)
    room = unique_name("live")
    alice.create_room(room)
    bob = signed_in(person, web)
    bob.open_room(room)
    expect(alice.page.locator("#live-state")).to_contain_text("Live")

    alice.post("hello from the first browser")
    # Bob never reloads: the long poll he is waiting in brings it.
    expect(bob.page.locator("#messages .text").first).to_have_text("hello from the first browser", timeout=2000)
    assert bob.shown_messages() == [(1, "hello from the first browser")]
    expect(bob.page.locator("#messages .author").first).to_have_text(alice_name)
    expect(bob.page.locator("#served-by")).to_contain_text("HAProxy server chat")

    bob.post("and back from the second")
    expect(alice.page.locator("#messages .text").first).to_have_text("and back from the second", timeout=2000)
    assert alice.shown_messages() == [(2, "and back from the second"), (1, "hello from the first browser")]

    # The room list counts both.
    alice.page.get_by_role("link", name="All rooms").click()
    expect(alice.page.locator("#room-list li", has_text=room)).to_contain_text("2 messages")


def test_markup_in_a_message_or_a_display_name_is_shown_as_text(person, web):
    alice = person()
    alice_name = unique_name("m")
    alice.register_and_log_in(alice_name, PASSWORD)
    alice.page.get_by_role("link", name="My profile").click()
    alice.page.get_by_label("Display name").fill("<b>Alice</b>")
    alice.page.get_by_role("button", name="Save profile").click()
    expect(alice.page.locator("#notice")).to_have_text("Profile saved.")
    expect(alice.page.locator("#whoami")).to_have_text(f"Signed in as <b>Alice</b> ({alice_name})")

    room = unique_name("xss")
    alice.page.get_by_role("link", name="All rooms").click()
    alice.create_room(room)
    bob = signed_in(person, web)
    bob.open_room(room)
    markup = "<img src=x onerror=alert(1)>"
    alice.post(markup)
    expect(bob.page.locator("#messages .text").first).to_have_text(markup, timeout=2000)
    assert bob.page.locator("#messages img").count() == 0

    bob.page.get_by_role("link", name=alice_name).first.click()
    expect(bob.page.locator("#profile-display-name")).to_have_text("<b>Alice</b>")
    assert bob.page.locator("#profile-view b").count() == 0
    expect(bob.page.locator("#profile-form")).to_be_hidden()  # not his to edit
    assert alice.dialogs == bob.dialogs == []


def test_a_reload_keeps_the_session_and_logging_out_revokes_the_token(person, web):
    someone = signed_in(person, web)
    page = someone.page
    token = page.evaluate("JSON.parse(sessionStorage.getItem('chatsys.session')).token")
    assert requests.get(f"{web.url}/validate", headers={"Authorization": f"Bearer {token}"}, timeout=10).ok
    assert page.context.cookies() == []
    assert token not in page.url

    page.reload()
    expect(page.locator("#rooms-view")).to_be_visible()
    expect(page.locator("#room-list")).to_contain_text("lobby")

    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#auth-view")).to_be_visible()
    expect(page.locator("#notice")).to_have_text("You are logged out.")
    assert page.evaluate("sessionStorage.length") == 0
    answer = requests.get(f"{web.url}/validate", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 401
    page.reload()
    expect(page.locator("#auth-view")).to_be_visible()


def test_a_session_ended_elsewhere_brings_back_the_log_in_form(person, web):
    someone = signed_in(person, web)
    token = someone.page.evaluate("JSON.parse(sessionStorage.getItem('chatsys.session')).token")
    assert (
        requests.post(f"{web.url}/logout", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 204
    )
    # A chat server may still honour the token from its cache (TOKEN_CACHE_SECONDS); the page
    # asks the login service itself when it starts.
    someone.page.reload()
    expect(someone.page.locator("#error")).to_have_text("Your session has ended; please log in again.")
    expect(someone.page.locator("#auth-view")).to_be_visible()


def test_history_is_newest_first_and_older_pages_come_by_seq_without_repeats(person, web):
    room = new_room_with(web, [f"message {n}" for n in range(1, 121)])
    someone = signed_in(person, web)
    someone.open_room(room)
    older = someone.page.get_by_role("button", name="Older messages")
    expect(someone.page.locator("#messages > li")).to_have_count(50)
    assert [seq for seq, _ in someone.shown_messages()] == list(range(120, 70, -1))
    older.click()
    expect(someone.page.locator("#messages > li")).to_have_count(100)
    older.click()
    expect(someone.page.locator("#messages > li")).to_have_count(120)
    expect(older).to_be_hidden()
    assert someone.shown_messages() == [(n, f"message {n}") for n in range(120, 0, -1)]


def test_bad_input_shows_one_error_line_and_the_page_goes_on(person, web):
    someone = person()
    page = someone.page
    page.locator("#login-username").fill("nobody-" + unique_name())
    page.locator("#login-password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#error")).to_be_visible()
    assert "\n" not in page.locator("#error").text_content()

    page.locator("#register-username").fill("x")  # too short for a user name
    page.locator("#register-password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#error")).to_be_visible()

    someone.log_in(registered(web), PASSWORD)
    page.locator("#room-name").fill("no spaces allowed")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#rooms-view")).to_be_visible()

    page.goto(f"{web.url}/#/room/%E0%A4%A")  # not a valid percent-encoding
    expect(page.locator("#error")).to_have_text("That address names no page of this client.")
    page.goto(f"{web.url}/#/room/{unique_name('none')}")
    expect(page.locator("#error")).to_be_visible()  # no such room: the chat service's 404

    page.get_by_role("link", name="My profile").click()
    page.get_by_label("Avatar URL").fill("javascript:alert(1)")
    page.get_by_role("button", name="Save profile").click()
    expect(page.locator("#error")).to_be_visible()
    page.get_by_label("Avatar URL").fill("")
    page.get_by_label("Bio").fill("fine now")
    page.get_by_role("button", name="Save profile").click()
    expect(page.locator("#profile-bio")).to_have_text("fine now")

    someone.open_room("lobby")
    page.locator("#message-text").press("Enter")  # nothing written
    expect(page.locator("#error")).to_have_text("Write a message first.")
    someone.post("the page still works")
    expect(page.locator("#messages .text").first).to_have_text("the page still works")


def test_the_policy_refuses_inline_script_and_style(person):
    someone = person()
    with pytest.raises(Exception, match="TrustedScript"):
        someone.page.add_script_tag(content="window.injected = true")
    assert someone.page.evaluate("window.injected") is None
    color = someone.page.evaluate("""() => {
        const probe = document.createElement('p');
        probe.setAttribute('style', 'color: rgb(255, 0, 0)');
        document.body.append(probe);
        return getComputedStyle(probe).color;
    }""")
    assert color != "rgb(255, 0, 0)"
    assert any("inline style" in report for report in someone.policy_reports), someone.policy_reports
    someone.policy_reports.clear()  # provoked on purpose; the fixture checks for the rest


def test_keyboard_alone_logs_in_creates_a_room_and_sends(person, web):
    someone = person()
    page = someone.page
    username = registered(web)
    expect(page.locator("#login-username")).to_be_focused()
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("#rooms-title")).to_be_focused()
    room = unique_name("keys")
    page.locator("#room-name").focus()
    page.keyboard.type(room)
    page.keyboard.press("Enter")
    expect(page.locator("#message-text")).to_be_focused()
    page.keyboard.type("typed, not clicked")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    page.keyboard.press("Enter")
    expect(page.locator("#messages .text").first).to_have_text("typed, not clicked\nsecond line")
    expect(page.locator("#message-text")).to_be_focused()


def test_a_phone_width_screen_needs_no_sideways_scrolling(person, web):
    room = new_room_with(web, ["a-long-word-" * 30, "short"])
    someone = signed_in(person, web, viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    for view in ("#/", f"#/room/{room}"):
        someone.page.goto(f"{web.url}/{view}")
        expect(someone.page.locator("main h1:visible")).to_be_visible()
        width = someone.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{view}: {width[0]} px wide on a {width[1]} px screen"


def waits_held(web: WebStack) -> dict[int, int]:
    """Index in web.chats -> long polls that chat server holds now (HAProxy's chat_waits)."""
    held = {}
    for row in web.balancer.command("show stat").splitlines():
        cells = row.split(",")
        if len(cells) > 4 and cells[0] == "chat_waits" and cells[1].startswith("chat") and int(cells[4] or 0):
            held[int(cells[1].removeprefix("chat")) - 1] = int(cells[4])
    return held


def test_both_pages_keep_working_when_a_chat_server_is_killed(person, web):
    room = unique_name("kill")
    alice = signed_in(person, web)
    alice.create_room(room)
    bob = signed_in(person, web)
    bob.open_room(room)
    sent = []

    def exchange(sender: WebUser, text: str) -> None:
        sender.post(text)
        sent.append(text)
        for reader in (alice, bob):
            expect(reader.page.locator("#messages .text").first).to_have_text(text, timeout=10_000)

    exchange(alice, "before the crash")
    exchange(bob, "reply before the crash")
    # The server holding the most of the two pages' long polls dies, so a wait is cut short.
    holding = harness.wait_until(lambda: waits_held(web), 10, "a long poll held at a chat server")
    victim = web.chats[max(holding, key=holding.get)]
    victim.kill()
    try:
        for n in range(3):
            exchange(alice, f"alice after the crash {n}")
            exchange(bob, f"bob after the crash {n}")
        expected = [(seq, text) for seq, text in zip(range(len(sent), 0, -1), reversed(sent), strict=True)]
        assert alice.shown_messages() == expected
        assert bob.shown_messages() == expected
        expect(alice.page.locator("#error")).to_be_hidden()
    finally:
        victim.process.start()
        victim.wait_ready()
