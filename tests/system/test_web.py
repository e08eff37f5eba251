"""The web client in a real browser: Debian's Chromium, headless, driven by Playwright, on a
real stack (FerretDB, login, profile, three chat servers, HAProxy serving web/ and routing
every API path on one port). Each person is a browser context of their own; every test ends
with no uncaught page error, no dialog and no report from the Content-Security-Policy."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from chat_service.store import message_id
from login_service.lookalikes import skeleton
from login_service.passwords import hash_password
from service_kit.timeutil import utcnow
from tests.lib import harness
from tests.lib.accounts import User, register_and_login, unique_name
from tests.lib.web_stack import WebStack, WebUser, launch_chromium, start_web_stack, web_files

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
def web(database) -> Iterator[WebStack]:
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
    # Nor are the lint's files beside the client's: the chat tier answers those paths too.
    for lint_file in ("/package.json", "/eslint.config.mjs", "/node_modules/eslint/package.json"):
        answer = requests.get(web.url + lint_file, timeout=10)
        assert answer.status_code != 200 and answer.headers["X-Instance"].startswith("chat@"), lint_file
    # An answer HAProxy makes itself gets the page's policy.
    too_long = requests.get(web.url + "/rooms?" + "x" * 4100, timeout=10)
    assert too_long.status_code == 414
    assert set(POLICY) <= {part.strip() for part in too_long.headers["Content-Security-Policy"].split(";")}


def test_haproxy_accepts_the_config_without_a_warning(web):
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


def post_as(web: WebStack, author, room: str, text: str) -> int:
    answer = requests.post(f"{web.url}/rooms/{room}/messages", json={"text": text}, headers=author.auth, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()["seq"]


def test_registering_logs_you_in_and_a_failed_login_clears_the_password(person, web):
    someone = person()
    page = someone.page
    name = unique_name("r")
    someone.register(name, PASSWORD)  # no second step: the account is logged in
    expect(page.locator("#home-view")).to_be_visible()
    assert page.locator("#register-password").input_value() == ""
    page.get_by_role("button", name="Log out").click()

    page.locator("#login-username").fill(name)
    page.locator("#login-password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#error")).to_have_text("Wrong user name or password.")
    expect(page.locator("#login-password")).to_have_value("")
    expect(page.locator("#login-password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("#whoami")).to_contain_text(name)


def test_the_composer_is_below_the_newest_message_and_history_runs_oldest_first(person, web):
    room = new_room_with(web, [f"message {n}" for n in range(1, 121)])
    someone = signed_in(person, web)
    someone.open_room(room)
    page = someone.page
    expect(page.locator("#messages > li").last).to_have_attribute("data-seq", "120")
    newest = page.locator("#messages > li").last.bounding_box()
    composer = page.locator("#message-text").bounding_box()
    assert newest["y"] + newest["height"] <= composer["y"], (newest, composer)
    assert newest["y"] >= 0  # in view, not somewhere above
    expect(page.locator("#jump")).to_be_hidden()
    # Scrolling up brings the older pages, in order, each once, up to the start of the room.
    for _ in range(10):
        if someone.shown_messages()[0][0] == 1:
            break
        first = someone.shown_messages()[0][0]
        page.locator("#scroller").evaluate("scroller => { scroller.scrollTop = 0; }")
        expect(page.locator("#messages > li").first).not_to_have_attribute("data-seq", str(first))
    assert someone.shown_messages() == [(n, f"message {n}") for n in range(1, 121)]
    expect(page.locator("#history-state")).to_have_text(f"This is the start of {room}.")


def test_a_message_posted_in_one_browser_appears_live_in_another(person, web):
    alice = person()
    alice_name = unique_name("a")
    alice.register(alice_name, PASSWORD)
    room = unique_name("live")
    alice.create_room(room)
    bob = signed_in(person, web)
    bob.open_room(room)

    alice.post("hello from the first browser")
    # Bob never reloads: the long poll he is waiting in brings it.
    expect(bob.page.locator("#messages .text").last).to_have_text("hello from the first browser", timeout=2000)
    assert bob.shown_messages() == [(1, "hello from the first browser")]
    expect(bob.page.locator("#messages .author").last).to_have_text(alice_name)
    expect(bob.page.locator("#served-by")).to_contain_text("HAProxy server chat")

    bob.post("and back from the second")
    expect(alice.page.locator("#messages .text").last).to_have_text("and back from the second", timeout=2000)
    assert alice.shown_messages() == [(1, "hello from the first browser"), (2, "and back from the second")]


def test_a_message_into_another_room_raises_its_unread_count_and_the_tab_title(person, web):
    writer = register_and_login(web.url, password=PASSWORD)
    here, there = unique_name("here"), unique_name("there")
    for room in (here, there):
        requests.post(f"{web.url}/rooms", json={"name": room}, headers=writer.auth, timeout=10)
    post_as(web, writer, there, "already read before you came")
    reader = signed_in(person, web)
    page = reader.page
    reader.open_room(here)
    expect(page.locator(f"#room-list li[data-room={there}]")).to_be_visible()
    expect(page).to_have_title(f"{here} · chatsys")

    post_as(web, writer, there, "one")
    post_as(web, writer, there, "two")
    badge = page.locator(f"#room-list li[data-room={there}] .badge")
    expect(badge).to_have_text("2", timeout=15_000)  # the list is asked for every few seconds
    expect(page).to_have_title(f"(2) {here} · chatsys")
    # Messages in the open room, read as they come, count for nothing.
    post_as(web, writer, here, "seen at once")
    expect(page.locator("#messages .text").last).to_have_text("seen at once")
    expect(page).to_have_title(f"(2) {here} · chatsys")

    # Opening the room reads it; a line marks where the unread part starts.
    page.locator(f"#room-list li[data-room={there}] a").click()
    expect(page.locator("#room-title")).to_have_text(there)
    expect(page.locator("#messages .unread-line")).to_have_text("New messages")
    unread_start = page.locator("#messages > li:has(.unread-line)")
    expect(unread_start.locator(".text")).to_have_text("one")
    expect(page).to_have_title(f"{there} · chatsys")
    expect(badge).to_have_count(0)
    # The filter narrows the list by name.
    page.locator("#room-filter").fill(there[-8:])
    expect(page.locator("#room-list li")).to_have_count(1)


def test_new_messages_below_the_view_show_a_button_that_takes_you_down(person, web):
    writer = register_and_login(web.url, password=PASSWORD)
    room = unique_name("below")
    requests.post(f"{web.url}/rooms", json={"name": room}, headers=writer.auth, timeout=10)
    for n in range(1, 61):
        post_as(web, writer, room, f"earlier {n}")
    reader = signed_in(person, web)
    page = reader.page
    reader.open_room(room)
    jump = page.locator("#jump")
    page.locator("#scroller").evaluate("scroller => { scroller.scrollTop = scroller.scrollHeight / 3; }")
    expect(jump).to_have_text("Jump to the latest ↓")  # the page has seen the reader leave the bottom
    post_as(web, writer, room, "new one")
    post_as(web, writer, room, "new two")
    expect(jump).to_have_text("2 new messages ↓")
    expect(page).to_have_title(f"(2) {room} · chatsys")
    # The view did not move: the new messages are below it.
    assert not page.locator("#messages .text", has_text="new two").is_visible() or page.locator("#scroller").evaluate(
        "s => s.scrollHeight - s.scrollTop - s.clientHeight > 48"
    )
    jump.click()
    expect(page.locator("#messages .text").last).to_have_text("new two")
    expect(page.locator("#messages .text").last).to_be_in_viewport()
    expect(page.locator("#messages > li:has(.unread-line) .text")).to_have_text("new one")
    expect(jump).to_be_hidden()
    expect(page).to_have_title(f"{room} · chatsys")
    # At the bottom, the view follows what comes.
    post_as(web, writer, room, "followed")
    expect(page.locator("#messages .text").last).to_have_text("followed")
    expect(page.locator("#messages .text").last).to_be_in_viewport()
    expect(jump).to_be_hidden()


def test_authors_show_by_display_name_grouped_with_relative_times_and_safe_links(person, web):
    writer = register_and_login(web.url, password=PASSWORD)
    requests.put(
        f"{web.url}/profiles/{writer.username}", json={"display_name": "Grace H."}, headers=writer.auth, timeout=10
    )
    room = unique_name("names")
    requests.post(f"{web.url}/rooms", json={"name": room}, headers=writer.auth, timeout=10)
    post_as(web, writer, room, "first of two")
    post_as(web, writer, room, "see https://example.org/a?b=1, or javascript:alert(1) or http://[bad")
    someone = signed_in(person, web)
    someone.open_room(room)
    page = someone.page
    author = page.locator("#messages .author").first
    expect(author).to_have_text("Grace H.")
    expect(author).to_have_attribute("title", f"@{writer.username}")
    items = page.locator("#messages > li")
    expect(items.nth(0)).to_have_class("message first")
    expect(items.nth(1)).to_have_class("message")  # the same author just after: grouped
    expect(page.locator("#messages .day").first).to_have_text("Today")
    time = items.nth(0).locator("time")
    expect(time).to_have_text("now")
    assert time.get_attribute("title")  # the exact time, on hover
    links = items.nth(1).locator(".text a")
    expect(links).to_have_count(1)
    expect(links).to_have_attribute("href", "https://example.org/a?b=1")
    assert set(links.get_attribute("rel").split()) >= {"noopener", "noreferrer"}


def test_markup_in_a_message_or_a_display_name_is_shown_as_text(person, web):
    alice = person()
    alice_name = unique_name("m")
    alice.register(alice_name, PASSWORD)
    alice.page.get_by_role("link", name="My profile").click()
    alice.page.get_by_label("Display name").fill("<b>Alice</b>")
    alice.page.get_by_role("button", name="Save profile").click()
    expect(alice.page.locator("#notice")).to_have_text("Profile saved.")
    expect(alice.page.locator("#whoami")).to_have_text(f"Signed in as <b>Alice</b> ({alice_name})")

    room = unique_name("xss")
    alice.create_room(room)
    bob = signed_in(person, web)
    bob.open_room(room)
    markup = "<img src=x onerror=alert(1)>"
    alice.post(markup)
    expect(bob.page.locator("#messages .text").last).to_have_text(markup, timeout=2000)
    expect(bob.page.locator("#messages .author .name").last).to_have_text("<b>Alice</b>")
    assert bob.page.locator("#messages img, #messages b").count() == 0

    bob.page.locator("#messages .author").last.click()
    expect(bob.page.locator("#profile-display-name")).to_have_text("<b>Alice</b>")
    assert bob.page.locator("#profile-view b").count() == 0
    expect(bob.page.locator("#profile-form")).to_be_hidden()  # not his to edit


# Where each of two characters of an element's text is drawn, left to right.
X_OF = """([element, first, second]) => {
    const at = (wanted) => {
        const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            const index = node.data.indexOf(wanted);
            if (index < 0) continue;
            const range = document.createRange();
            range.setStart(node, index);
            range.setEnd(node, index + 1);
            return range.getBoundingClientRect().left;
        }
        throw new Error(`${wanted} is not in the text`);
    };
    return [at(first), at(second)];
}"""


def drawn_in_order(locator, first: str, second: str) -> bool:
    left_first, left_second = locator.page.evaluate(X_OF, [locator.element_handle(), first, second])
    return left_first < left_second


def test_a_right_to_left_override_is_shown_not_applied_in_a_message_a_name_and_a_bio(person, web):
    writer = register_and_login(web.url, password=PASSWORD)
    requests.put(
        f"{web.url}/profiles/{writer.username}",
        json={"display_name": "\u202emallory", "bio": "\u202eevil\u202c bio"},
        headers=writer.auth,
        timeout=10,
    )
    room = unique_name("rlo")
    requests.post(f"{web.url}/rooms", json={"name": room}, headers=writer.auth, timeout=10)
    post_as(web, writer, room, "\u202ecarol is the admin!")
    reader = signed_in(person, web)
    page = reader.page
    reader.open_room(room)
    text = page.locator("#messages .text").last
    expect(text.locator(".control")).to_have_text("RLO")
    assert drawn_in_order(text, "c", "!"), "the override reordered the message"
    name = page.locator("#messages .author .name").last
    expect(name).to_contain_text("mallory")
    assert drawn_in_order(name, "m", "y"), "the override reordered the display name"
    page.goto(f"{web.url}/#/profile/{writer.username}")
    bio = page.locator("#profile-bio")
    expect(bio).to_contain_text("evil")
    assert drawn_in_order(bio, "e", "l"), "the override reordered the bio"
    expect(bio.locator(".control")).to_have_text(["RLO", "PDF"])
    # Text in a right-to-left script still reads right to left: only the controls are shown.
    post_as(web, writer, room, "שלום")
    reader.open_room(room)
    assert not drawn_in_order(page.locator("#messages .text").last, "ש", "ם")


def test_tall_and_heavily_combined_messages_are_clamped_with_show_more(person, web):
    tall = "\n" * 1999
    stacked = "Zalgo" + "\u0301\u0316\u0327\u0350" * 120 + " ends"
    room = new_room_with(web, ["before", tall.replace("\n", "x", 1), stacked, "after"])
    someone = signed_in(person, web)
    someone.open_room(room)
    page = someone.page
    items = page.locator("#messages > li")
    expect(items).to_have_count(4)
    for index in (1, 2):
        box = items.nth(index).bounding_box()
        assert box["height"] < 300, f"message {index + 1} is {box['height']} px tall"
        expect(items.nth(index).get_by_role("button", name="Show more")).to_be_visible()
    # Nothing of the accents is drawn outside its message.
    inside = items.nth(2).evaluate("""item => {
        const outer = item.getBoundingClientRect();
        const text = item.querySelector('.text');
        const drawn = text.getBoundingClientRect();
        return drawn.top >= outer.top && drawn.bottom <= outer.bottom && getComputedStyle(text).overflow === 'hidden';
    }""")
    assert inside
    expect(items.nth(0).get_by_role("button", name="Show more")).to_have_count(0)
    items.nth(1).get_by_role("button", name="Show more").click()
    expect(items.nth(1).get_by_role("button", name="Show less")).to_be_focused()
    assert items.nth(1).bounding_box()["height"] > 1000
    items.nth(1).get_by_role("button", name="Show less").click()
    assert items.nth(1).bounding_box()["height"] < 300


def earlier_look_alike(database: harness.Database, web: WebStack, username: str) -> User:
    """An account whose name looks like a taken one. Registration refuses such a name, so
    this is an account from before that rule (or another login service's), written as the
    login service keeps one (login_service.store.index_skeletons), then logged in."""
    with pymongo.MongoClient[dict[str, Any]](database.uri) as client:
        client.get_default_database().users.insert_one(
            {
                "_id": username.lower(),
                "username": username,
                "skeleton": f"{skeleton(username)} {username.lower()}",
                "password_hash": hash_password(PASSWORD, 2**14),
                "created_at": utcnow(),
                "login_addresses": [],
            }
        )
    session = requests.post(f"{web.url}/login", json={"username": username, "password": PASSWORD}, timeout=10)
    assert session.status_code == 200, session.text
    return User(username, PASSWORD, session.json()["token"])


def test_a_user_name_that_looks_like_another_is_marked(person, web, database):
    tail = unique_name("")[:10]
    honest = register_and_login(web.url, f"carol{tail}l", password=PASSWORD)
    mimic = earlier_look_alike(database, web, f"caroI{tail}I")  # capital i
    plain = register_and_login(web.url, password=PASSWORD)
    room = unique_name("look")
    requests.post(f"{web.url}/rooms", json={"name": room}, headers=honest.auth, timeout=10)
    post_as(web, honest, room, "I am the admin")
    post_as(web, plain, room, "hello")
    post_as(web, mimic, room, "no, I am")
    someone = signed_in(person, web)
    someone.open_room(room)
    page = someone.page
    marks = page.locator("#messages .look-alike")
    expect(marks).to_have_count(2)
    expect(marks.first).to_have_text(f"looks like {mimic.username}")
    expect(marks.last).to_have_text(f"looks like {honest.username}")
    expect(page.locator(f"#messages .author[data-user={mimic.username}]")).to_contain_text(f"@{mimic.username}")
    expect(page.locator(f"#messages .author[data-user={plain.username}] .look-alike")).to_have_count(0)


def test_an_unknown_room_says_so_and_offers_the_list(person, web):
    someone = signed_in(person, web)
    page = someone.page
    missing = unique_name("none")
    page.goto(f"{web.url}/#/room/{missing}")
    expect(page.locator("#room-missing")).to_contain_text(f"There is no room named {missing}.")
    expect(page.locator("#send-form")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()
    page.locator("#room-missing").get_by_role("link", name="See all rooms").click()
    expect(page.locator("#home-view")).to_be_visible()
    expect(page.locator("#room-list")).to_contain_text("lobby")


def test_errors_are_written_for_people_and_the_page_goes_on(person, web):
    someone = person()
    page = someone.page
    taken = registered(web)
    page.locator("#register-username").fill("x")
    page.locator("#register-password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#error")).to_have_text("A user name is 3 to 32 letters, digits, _, . or -.")
    page.locator("#register-username").fill(unique_name())
    page.locator("#register-password").fill("short")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#error")).to_have_text("A password is 8 to 128 characters.")
    page.locator("#register-username").fill(taken)
    page.locator("#register-password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#error")).to_have_text("That user name is taken; choose another.")

    someone.log_in(taken, PASSWORD)
    page.locator("#room-name").fill("no spaces allowed")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator("#error")).to_have_text("A room name is 1 to 64 letters, digits, _ or -, with no spaces.")

    page.goto(f"{web.url}/#/room/%E0%A4%A")  # not a valid percent-encoding
    expect(page.locator("#error")).to_have_text("That address names no page of this client.")

    page.get_by_role("link", name="My profile").click()
    page.get_by_label("Avatar URL").fill("javascript:alert(1)")
    page.get_by_role("button", name="Save profile").click()
    expect(page.locator("#error")).to_have_text("The avatar must be an http or https address, or nothing.")
    page.get_by_label("Avatar URL").fill("")
    page.get_by_label("Bio").fill("fine now")
    page.get_by_role("button", name="Save profile").click()
    expect(page.locator("#profile-bio")).to_have_text("fine now")

    someone.open_room("lobby")
    page.locator("#message-text").press("Enter")  # nothing written
    expect(page.locator("#error")).to_have_text("Write a message first.")
    someone.post("the page still works")
    expect(page.locator("#messages .text").last).to_have_text("the page still works")


def test_a_reload_keeps_the_session_and_logging_out_revokes_the_token(person, web):
    someone = signed_in(person, web)
    page = someone.page
    token = page.evaluate("JSON.parse(sessionStorage.getItem('chatsys.session')).token")
    assert requests.get(f"{web.url}/validate", headers={"Authorization": f"Bearer {token}"}, timeout=10).ok
    assert page.context.cookies() == []
    assert token not in page.url

    page.reload()
    expect(page.locator("#home-view")).to_be_visible()
    expect(page.locator("#room-list")).to_contain_text("lobby")

    someone.open_room("lobby")
    page.locator("#message-text").fill("not for whoever logs in next")
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#auth-view")).to_be_visible()
    expect(page.locator("#notice")).to_have_text("You are logged out.")
    assert page.evaluate("Object.keys(sessionStorage)") == []  # neither the token nor a draft
    answer = requests.get(f"{web.url}/validate", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 401
    page.reload()
    expect(page.locator("#auth-view")).to_be_visible()


def test_a_session_that_ends_says_so_and_keeps_the_draft(person, web):
    username = registered(web)
    someone = person()
    someone.log_in(username, PASSWORD)
    page = someone.page
    someone.open_room("lobby")
    page.locator("#message-text").fill("half a thought")
    token = page.evaluate("JSON.parse(sessionStorage.getItem('chatsys.session')).token")
    assert (
        requests.post(f"{web.url}/logout", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 204
    )
    # A chat server may still honour the token from its cache (TOKEN_CACHE_SECONDS); the page
    # asks the login service itself when it starts.
    page.reload()
    expect(page.locator("#error")).to_have_text("Your session has ended; please log in again. Any draft is kept.")
    expect(page.locator("#auth-view")).to_be_visible()
    someone.log_in(username, PASSWORD)
    expect(page.locator("#room-title")).to_have_text("lobby")
    expect(page.locator("#message-text")).to_have_value("half a thought")


def test_the_end_of_a_session_is_announced_before_and_said_when_it_comes(person, web):
    someone = person()
    page = someone.page
    page.clock.install()  # the page's timers and Date, fast-forwarded below
    page.reload()
    username = registered(web)
    someone.log_in(username, PASSWORD)  # a token for an hour (the login service's default)
    someone.open_room("lobby")
    page.locator("#message-text").fill("written just before the end")
    page.clock.fast_forward("56:00")
    expect(page.locator("#notice")).to_contain_text("Your session ends at")
    expect(page.locator("#message-text")).to_have_value("written just before the end")
    page.clock.fast_forward("05:00")
    expect(page.locator("#error")).to_have_text("Your session has ended; please log in again. Any draft is kept.")
    expect(page.locator("#auth-view")).to_be_visible()
    draft = page.evaluate(f"sessionStorage.getItem('chatsys.draft.{username}.lobby')")
    assert draft == "written just before the end"


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


def test_keyboard_alone_logs_in_creates_a_room_sends_and_changes_rooms(person, web):
    someone = person()
    page = someone.page
    username = registered(web)
    expect(page.locator("#login-username")).to_be_focused()
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("#home-title")).to_be_focused()
    room = unique_name("keys")
    # From the top of the page, Tab reaches the new-room field.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "room-name":
            break
    expect(page.locator("#room-name")).to_be_focused()
    page.keyboard.type(room)
    page.keyboard.press("Enter")
    expect(page.locator("#message-text")).to_be_focused()
    page.keyboard.type("typed, not clicked")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    page.keyboard.press("Enter")
    expect(page.locator("#messages .text").last).to_have_text("typed, not clicked\nsecond line")
    expect(page.locator("#message-text")).to_be_focused()
    # Back up to the room list, filter it, and open the lobby with Enter.
    page.locator("#room-filter").focus()
    page.keyboard.type("lobby")
    page.keyboard.press("Tab")
    lobby = page.locator("#room-list li[data-room=lobby] a")
    expect(lobby).to_be_focused()
    # A message elsewhere redraws the list under the keyboard: the focus stays on the link.
    post_as(web, register_and_login(web.url, password=PASSWORD), "lobby", "while you choose")
    expect(lobby.locator(".badge")).to_be_visible(timeout=15_000)
    expect(lobby).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#room-title")).to_have_text("lobby")
    expect(page.locator("#message-text")).to_be_focused()


def test_a_phone_width_screen_folds_the_room_list_into_a_drawer_and_never_scrolls_sideways(person, web):
    room = new_room_with(web, ["a-long-word-" * 30, "short"])
    someone = signed_in(person, web, viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    page = someone.page

    def fits(view: str) -> None:
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{view}: {width[0]} px wide on a {width[1]} px screen"

    # Home is the room list itself.
    expect(page.locator("#room-list")).to_be_visible()
    fits("home")
    page.locator(f"#room-list li[data-room={room}] a").click()
    expect(page.locator("#room-title")).to_have_text(room)
    expect(page.locator("#room-list")).to_be_hidden()
    expect(page.locator("#message-text")).to_be_visible()
    fits("room")
    drawer = page.get_by_role("button", name="Rooms")
    drawer.click()
    expect(drawer).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#room-list")).to_be_visible()
    expect(page.locator("#room-filter")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#room-list")).to_be_hidden()
    expect(drawer).to_be_focused()
    drawer.click()
    page.locator("#room-list li[data-room=lobby] a").click()
    expect(page.locator("#room-title")).to_have_text("lobby")
    expect(page.locator("#room-list")).to_be_hidden()
    page.get_by_role("link", name="My profile").click()
    expect(page.locator("#profile-form")).to_be_visible()
    fits("profile")


def test_dark_mode_follows_the_system(person, web):
    light = person()
    dark = person(color_scheme="dark")
    background = "getComputedStyle(document.documentElement).backgroundColor"
    assert light.page.evaluate(background) != dark.page.evaluate(background)
    # Dark means dark: the sum of the channels of the page's ground is low.
    channels = dark.page.evaluate(f"{background}.match(/\\d+/g).slice(0, 3).map(Number)")
    assert sum(channels) < 3 * 64, channels


def fill_room(database, room: str, count: int) -> None:
    """A room of `count` messages written straight into the store (posting them one by one
    through the limits would take minutes), a minute apart, so they span days."""
    import pymongo

    now = datetime.now(UTC)
    client: pymongo.MongoClient = pymongo.MongoClient(database.uri, serverSelectionTimeoutMS=5000)
    with client:
        db = client.get_default_database()
        db.rooms.insert_one({"_id": room, "created_at": now - timedelta(minutes=count), "last_seq": count})
        for start in range(1, count + 1, 1000):
            db.messages.insert_many(
                [
                    {
                        "_id": message_id(room, seq),
                        "author": f"writer{seq % 3}",
                        "text": f"message {seq}" + ("\nwith a second line" if seq % 5 == 0 else ""),
                        "created_at": now - timedelta(minutes=count - seq),
                    }
                    for seq in range(start, min(start + 1000, count + 1))
                ]
            )


def test_a_room_of_ten_thousand_messages_draws_only_what_is_near_the_view(person, web, database):
    room = unique_name("big")
    fill_room(database, room, 10_000)
    someone = signed_in(person, web)
    page = someone.page
    someone.open_room(room)
    expect(page.locator("#messages > li").last).to_have_attribute("data-seq", "10000")
    scroller = page.locator("#scroller")
    # Scroll up through 1,500 messages, a screen at a time as a reader would.
    for _ in range(100):
        top = someone.shown_messages()[0][0]
        if top <= 10_000 - 1_500:
            break
        scroller.evaluate("s => { s.scrollTop = 0; }")
        expect(page.locator("#messages > li").first).not_to_have_attribute("data-seq", str(top))
        # The message that was at the top is still where it was: nothing jumped.
        box = page.locator(f"#messages > li[data-seq='{top}']").bounding_box()
        view = scroller.bounding_box()
        assert box is not None and abs(box["y"] - view["y"]) < 60, (box, view)
        assert page.locator("#messages > li").count() <= 150
    assert someone.shown_messages()[0][0] <= 10_000 - 1_500
    assert page.evaluate("document.getElementsByTagName('*').length") < 2500
    # And back down: the newest come back into the page as the oldest drawn leave it.
    for _ in range(100):
        if someone.shown_messages()[-1][0] == 10_000:
            break
        bottom = someone.shown_messages()[-1][0]
        scroller.evaluate("s => { s.scrollTop = s.scrollHeight; }")
        expect(page.locator("#messages > li").last).not_to_have_attribute("data-seq", str(bottom))
        assert page.locator("#messages > li").count() <= 150
    expect(page.locator("#messages > li").last).to_have_attribute("data-seq", "10000")
    seqs = [seq for seq, _ in someone.shown_messages()]
    assert seqs == list(range(seqs[0], 10_001))


# --- accessibility ------------------------------------------------------------------------------

AXE = harness.ROOT / "tests" / "node_modules" / "axe-core" / "axe.min.js"
LOOKS = {
    "desktop": {"viewport": {"width": 1100, "height": 720}},
    "phone": {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True},
    "dark": {"viewport": {"width": 1100, "height": 720}, "color_scheme": "dark"},
}


def serious_violations(page) -> list[str]:
    """What axe-core (tests/package.json, installed by scripts/setup.sh) finds serious or
    critical on the page as it is now."""
    assert AXE.is_file(), f"{AXE} is missing: run scripts/setup.sh (npm ci in tests/)"
    if not page.evaluate("typeof axe === 'object'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    return [
        f"{violation['id']} ({violation['impact']}): {[node['target'] for node in violation['nodes']]}"
        for violation in result["violations"]
        if violation["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("look", LOOKS)
def test_axe_finds_nothing_serious_on_any_screen(person, web, database, look):
    writer = register_and_login(web.url, f"l{unique_name('')[:10]}", password=PASSWORD)
    mimic = earlier_look_alike(database, web, writer.username.replace("l", "I", 1))
    requests.put(
        f"{web.url}/profiles/{writer.username}", json={"display_name": "Writer"}, headers=writer.auth, timeout=10
    )
    room = unique_name("axe")
    requests.post(f"{web.url}/rooms", json={"name": room}, headers=writer.auth, timeout=10)
    for text in ("hello", "see https://example.org", "\u202eevil", "\n" * 40 + "tall"):
        post_as(web, writer, room, text)
    post_as(web, mimic, room, "me too")
    # Only here is the policy bypassed: axe-core goes into the page as an inline script.
    someone = person(bypass_csp=True, **LOOKS[look])
    page = someone.page
    found = {"log in": serious_violations(page)}
    someone.log_in(registered(web), PASSWORD)
    found["home"] = serious_violations(page)
    someone.open_room(room)
    expect(page.locator("#messages .look-alike").first).to_be_visible()
    page.locator("#scroller").evaluate("s => { s.scrollTop = 0; }")
    found["room"] = serious_violations(page)
    page.goto(f"{web.url}/#/room/{unique_name('none')}")
    expect(page.locator("#room-missing")).to_be_visible()
    found["unknown room"] = serious_violations(page)
    page.goto(f"{web.url}/#/profile/{writer.username}")
    expect(page.locator("#profile-details")).to_be_visible()
    found["profile"] = serious_violations(page)
    page.get_by_role("link", name="My profile").click()
    expect(page.locator("#profile-form")).to_be_visible()
    found["own profile"] = serious_violations(page)
    if look == "phone":
        page.get_by_role("button", name="Rooms").click()
        found["drawer"] = serious_violations(page)
        page.keyboard.press("Escape")
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#notice")).to_be_visible()
    found["logged out"] = serious_violations(page)
    assert {screen: problems for screen, problems in found.items() if problems} == {}


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
            expect(reader.page.locator("#messages .text").last).to_have_text(text, timeout=10_000)

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
        expected = list(enumerate(sent, start=1))
        assert alice.shown_messages() == expected
        assert bob.shown_messages() == expected
        expect(alice.page.locator("#error")).to_be_hidden()
    finally:
        victim.process.start()
        victim.wait_ready()
