"""Login service: accounts, password login, opaque bearer tokens, validation, logout."""

from __future__ import annotations

from service_kit.app import create_service_app
from service_kit.config import Settings


def create_app(settings: Settings | None = None):
    from login_service import api

    return create_service_app("login", settings, [api.blueprint], setup=api.setup)
