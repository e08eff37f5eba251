"""Screenshots of the web client's main screens for docs/web-client.md, from a real stack
(FerretDB, login, profile, three chat servers, HAProxy) in Debian's headless Chromium.

    .venv/bin/python scripts/web_screenshots.py [--out docs/web-client]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from loadtest import harness  # noqa: E402
from tests.web_stack import WebUser, launch_chromium, start_web_stack  # noqa: E402

PASSWORD = "correct horse 1"
DESKTOP = {"viewport": {"width": 1100, "height": 720}}
PHONE = {"viewport": {"width": 390, "height": 780}, "is_mobile": True, "has_touch": True, "device_scale_factor": 1}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "web-client", help="folder for the PNG files")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    group = harness.ProcessGroup("chatsys-screens-")
    try:
        stack = start_web_stack(group, harness.start_ferretdb(group))
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            ada = WebUser.open(browser, stack.url, **DESKTOP)
            ada.page.screenshot(path=out / "login.png")
            ada.register_and_log_in("ada")
            ada.page.get_by_role("link", name="My profile").click()
            ada.page.get_by_label("Display name").fill("Ada L.")
            ada.page.get_by_label("Bio").fill("Writes the notes for the\nanalytical engine.")
            ada.page.get_by_label("Avatar URL").fill("https://example.org/ada.png")
            ada.page.get_by_role("button", name="Save profile").click()
            expect(ada.page.locator("#notice")).to_have_text("Profile saved.")
            ada.page.screenshot(path=out / "profile.png", full_page=True)

            ada.page.get_by_role("link", name="All rooms").click()
            for room in ("engines", "tea"):
                ada.create_room(room)
                ada.page.get_by_role("link", name="All rooms").click()
            charles = WebUser.open(browser, stack.url, **PHONE)
            charles.register_and_log_in("charles")
            charles.open_room("engines")
            ada.open_room("engines")
            for author, text in (
                (ada, "Is the mill ready for the next card?"),
                (charles, "Almost: the store holds 1,000 numbers now."),
                (ada, "Then the Bernoulli table runs tonight.\nI bring the cards."),
                (charles, "<b>markup</b> stays text, as it should."),
            ):
                author.post(text)
                expect(ada.page.locator("#messages .text").first).to_have_text(text)
                expect(charles.page.locator("#messages .text").first).to_have_text(text)
            ada.page.screenshot(path=out / "room.png")
            charles.page.screenshot(path=out / "room-phone.png")
            ada.page.get_by_role("link", name="All rooms").click()
            expect(ada.page.locator("#room-list li", has_text="engines")).to_contain_text("4 messages")
            ada.page.screenshot(path=out / "rooms.png")
            browser.close()
    finally:
        group.close()
    for name in ("login", "rooms", "room", "room-phone", "profile"):
        print(out / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
