"""Profile service: one public profile per user, editable only by its owner."""

from __future__ import annotations

from service_kit.app import create_service_app
from service_kit.config import Settings


def create_app(settings: Settings | None = None):
    from profile_service import api

    return create_service_app("profile", settings, [api.blueprint], setup=api.setup)
