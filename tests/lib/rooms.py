"""A room's whole history through the chat API, as the tests that count what was stored read it."""

from __future__ import annotations

import requests

PAGE = 200  # the contract's largest page
MAX_PAGES = 1000


def read_room(url: str, room: str, auth: dict[str, str], timeout: float = 30) -> list[dict]:
    """Every message of `room`, oldest first, page after page from `after=0` by each page's
    `next_after`, until a page comes back empty. Every page must be a 200."""
    messages: list[dict] = []
    after = 0
    for _ in range(MAX_PAGES):
        response = requests.get(
            f"{url}/rooms/{room}/messages", params={"after": after, "limit": PAGE}, headers=auth, timeout=timeout
        )
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["messages"]:
            return messages
        messages += page["messages"]
        after = page["next_after"]
    raise AssertionError(f"room {room} has more than {MAX_PAGES * PAGE} messages")
