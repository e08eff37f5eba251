"""Screenshots of the web client's screens for docs/web-client.md, each on a desktop, a phone
and in dark mode, from a real stack (FerretDB, login, profile, three chat servers, HAProxy)
in Debian's headless Chromium.

    .venv/bin/python -m tools.web_screenshots [--out docs/web-client] [--lighthouse DIR]

With --lighthouse, it then runs Lighthouse (tools/web_lighthouse.mjs) on the same stack, on
the desktop and the mobile preset; DIR is a folder where `npm install lighthouse@12
puppeteer-core` was run (Lighthouse 12 runs on Node 20; 13 needs Node 22).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import expect, sync_playwright

from tests.lib import harness
from tests.lib.web_stack import WebUser, launch_chromium, start_web_stack

ROOT = Path(__file__).resolve().parent.parent


PASSWORD = "correct horse 1"
LOOKS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1100, "height": 720}},
    "phone": {
        "viewport": {"width": 390, "height": 780},
        "is_mobile": True,
        "has_touch": True,
        "device_scale_factor": 1,
    },
    "dark": {"viewport": {"width": 1100, "height": 720}, "color_scheme": "dark"},
}
CONVERSATION = [
    ("ada", "Is the mill ready for the next card?"),
    ("charles", "Almost: the store holds 1,000 numbers now."),
    ("charles", "The drawings are at https://example.org/engine, page 3."),
    ("ada", "Then the Bernoulli table runs tonight.\nI bring the cards."),
    ("caroI3ht", "\u202e!nimda eht si thl3orac"),
    ("carol3ht", "<b>markup</b> stays text, as it should."),
    ("caroI3ht", "\n".join(f"line {n}" for n in range(1, 41))),
]


def api_user(url: str, username: str) -> dict[str, str]:
    requests.post(f"{url}/users", json={"username": username, "password": PASSWORD}, timeout=10)
    token = requests.post(f"{url}/login", json={"username": username, "password": PASSWORD}, timeout=10).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def seed(url: str) -> None:
    """Two rooms and a conversation, with a look-alike name, an override and a tall message."""
    auth = {name: api_user(url, name) for name in ("ada", "charles", "carol3ht", "caroI3ht")}
    requests.put(
        f"{url}/profiles/ada",
        json={"display_name": "Ada L.", "bio": "Writes the notes for the\nanalytical engine."},
        headers=auth["ada"],
        timeout=10,
    )
    requests.put(f"{url}/profiles/charles", json={"display_name": "Charles B."}, headers=auth["charles"], timeout=10)
    for room in ("engines", "tea", "difference"):
        requests.post(f"{url}/rooms", json={"name": room}, headers=auth["ada"], timeout=10)
    for author, text in CONVERSATION:
        answer = requests.post(f"{url}/rooms/engines/messages", json={"text": text}, headers=auth[author], timeout=10)
        answer.raise_for_status()


def lighthouse(folder: Path, url: str) -> None:
    """Scores of each step, one line each, for docs/web-client.md."""
    script = shutil.copy(ROOT / "tools" / "web_lighthouse.mjs", folder / "web_lighthouse.mjs")
    for preset in ("desktop", "mobile"):
        command = ["node", str(script), url, "ada", PASSWORD, "engines", preset]
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600)
        if result.returncode:
            raise SystemExit(f"Lighthouse failed ({preset}):\n{result.stderr}")
        for line in result.stdout.splitlines():
            step = json.loads(line)
            scores = ", ".join(f"{name} {score}" for name, score in step["scores"].items())
            print(f"lighthouse {preset}: {step['step']} ({step['mode']}): {scores}; failing: {step['failing']}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.web_screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "web-client", help="folder for the PNG files")
    parser.add_argument("--lighthouse", type=Path, help="folder with lighthouse and puppeteer-core installed")
    arguments = parser.parse_args()
    out = arguments.out
    out.mkdir(parents=True, exist_ok=True)
    written = []
    group = harness.ProcessGroup("chatsys-screens-")
    try:
        stack = start_web_stack(group, harness.start_ferretdb(group))
        seed(stack.url)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            for look, options in LOOKS.items():

                def shot(screen: str, page, look: str = look) -> None:
                    path = out / f"{screen}-{look}.png"
                    page.mouse.move(0, 0)  # no hover left where the last click was
                    page.screenshot(path=path)
                    written.append(path)

                person = WebUser.open(browser, stack.url, **options)
                page = person.page
                shot("login", page)
                person.log_in("ada", PASSWORD)
                page.goto(f"{stack.url}/#/")
                shot("rooms", page)
                person.open_room("engines")
                expect(page.locator(".look-alike").first).to_be_visible()
                expect(page.locator(".author .name", has_text="Charles B.").first).to_be_visible()
                shot("room", page)
                # Someone writes in another room meanwhile: its count and the tab title rise.
                requests.post(
                    f"{stack.url}/rooms/tea/messages",
                    json={"text": "Tea is ready."},
                    headers=api_user(stack.url, "charles"),
                    timeout=10,
                )
                if look == "phone":
                    page.get_by_role("button", name="Rooms").click()
                expect(page.locator("#room-list li[data-room=tea] .badge")).to_have_text("1", timeout=15_000)
                shot("unread", page)
                if look == "phone":
                    page.keyboard.press("Escape")
                page.goto(f"{stack.url}/#/profile/ada")
                expect(page.locator("#profile-form")).to_be_visible()
                shot("profile", page)
                person.close()
            browser.close()
        if arguments.lighthouse:
            lighthouse(arguments.lighthouse, stack.url)
    finally:
        group.close()
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
