"""The web client's stack and browser: login, profile and three chat servers behind one
HAProxy that also serves web/, and headless Chromium (Debian's) driven by Playwright.

tests/system/test_web.py and tools/web_screenshots.py share these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, expect

from tests.lib import harness

CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/setup.sh); Playwright downloads none
WEB_ROOT = harness.ROOT / "web"
# What Chromium writes to the console when the page's policy refuses something.
CSP_REPORT = re.compile(r"Content Security Policy|requires 'Trusted\w+' assignment")


@dataclass
class WebStack:
    login: harness.Service
    profile: harness.Service
    chats: list[harness.Service]
    balancer: harness.LoadBalancer

    @property
    def url(self) -> str:
        return self.balancer.url


def start_web_stack(group: harness.ProcessGroup, database: harness.Database) -> WebStack:
    """Login, profile and three chat servers on free ports, HAProxy in front of all of them."""
    base = {"MONGO_URI": database.uri, "TOKEN_CACHE_SECONDS": "30"}
    login = harness.start_service(group, "login", base)
    services = {**base, "LOGIN_URL": login.url}
    profile = harness.start_service(group, "profile", services)
    chats = [harness.start_service(group, "chat", services) for _ in range(3)]
    balancer = harness.start_haproxy(
        group,
        [chat.port for chat in chats],
        {"LOGIN_SERVER": f"127.0.0.1:{login.port}", "PROFILE_SERVER": f"127.0.0.1:{profile.port}"},
    )
    harness.wait_until(
        lambda: list(balancer.server_states().values()).count("UP") == 3, 15, "HAProxy to see three chat servers up"
    )
    return WebStack(login, profile, chats, balancer)


def launch_chromium(playwright: Playwright) -> Browser:
    executable = harness.require_tool("chromium", CHROMIUM)
    return playwright.chromium.launch(executable_path=executable, headless=True)


@dataclass
class WebUser:
    """One person at the web client: a browser context of their own (own sessionStorage),
    with everything the page reports that a person would not want."""

    page: Page
    base_url: str
    policy_reports: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, browser: Browser, base_url: str, **context_options) -> WebUser:
        context: BrowserContext = browser.new_context(**context_options)
        user = cls(context.new_page(), base_url)
        user.page.on("console", user._console)
        user.page.on("pageerror", lambda error: user.page_errors.append(str(error)))
        user.page.on("dialog", user._dialog)
        user.page.goto(base_url + "/")
        return user

    def _console(self, message: ConsoleMessage) -> None:
        if CSP_REPORT.search(message.text):
            self.policy_reports.append(message.text)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self) -> None:
        self.page.context.close()

    # The screens, as a person uses them

    def register(self, username: str, password: str = "correct horse 1") -> None:
        """Creates the account, which logs it in."""
        self.page.locator("#register-username").fill(username)
        self.page.locator("#register-password").fill(password)
        self.page.get_by_role("button", name="Create account").click()
        expect(self.page.locator("#whoami")).to_contain_text(username)

    def log_in(self, username: str, password: str) -> None:
        self.page.locator("#login-username").fill(username)
        self.page.locator("#login-password").fill(password)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.locator("#whoami")).to_contain_text(username)

    def create_room(self, name: str) -> None:
        if not self.page.locator("#room-name").is_visible():
            self.page.get_by_role("button", name="Rooms").click()  # the drawer, on a phone
        self.page.locator("#room-name").fill(name)
        self.page.get_by_role("button", name="Create", exact=True).click()
        expect(self.page.locator("#room-title")).to_have_text(name)
        expect(self.page.locator("#live-state")).to_have_text("Live")

    def open_room(self, name: str) -> None:
        self.page.goto(f"{self.base_url}/#/room/{name}")
        expect(self.page.locator("#room-title")).to_have_text(name)
        expect(self.page.locator("#live-state")).to_have_text("Live")

    def post(self, text: str) -> None:
        box = self.page.locator("#message-text")
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")

    def shown_messages(self) -> list[tuple[int, str]]:
        """(seq, text) of every message drawn, top to bottom (oldest first)."""
        return [
            (int(seq), text)
            for seq, text in self.page.locator("#messages > li").evaluate_all(
                "items => items.map(item => [item.dataset.seq, item.querySelector('.text').textContent])"
            )
        ]


def web_files() -> list[Path]:
    """The client's files, which HAProxy serves (conf/haproxy/web.lua): not the lint's
    (package.json, its lock, eslint.config.mjs, node_modules/)."""
    return sorted(
        path
        for path in WEB_ROOT.rglob("*")
        if path.is_file() and path.suffix in (".html", ".css", ".js", ".svg") and "node_modules" not in path.parts
    )
