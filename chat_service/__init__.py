"""Chat service: rooms and their messages, stateless so that any number can run side by side."""

from __future__ import annotations

from service_kit.app import create_service_app
from service_kit.config import Settings


def create_app(settings: Settings | None = None):
    from chat_service import api

    return create_service_app("chat", settings, [api.blueprint], setup=api.setup)
