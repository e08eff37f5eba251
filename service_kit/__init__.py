"""Shared kit of the login, profile and chat services.

Each service builds its Flask app with `create_service_app`, which wires configuration,
the MongoDB connection, problem+json errors, `/health`, `/ready` and `X-Instance`.
"""
from service_kit.app import create_service_app

__all__ = ["create_service_app"]
