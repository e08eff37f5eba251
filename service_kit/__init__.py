"""Shared kit of the login, profile and chat services.

Each service builds its Flask app with `service_kit.app.create_service_app`, which wires
configuration, the MongoDB connection, problem+json errors, `/health`, `/ready`,
`X-Instance`, request ids, JSON log lines and metrics. The package itself imports
nothing, so that `service_kit.config` (the ports and settings, no dependencies) can be
read where Flask and pymongo must not be imported yet: gunicorn's configuration, before a
gevent worker patches the standard library.
"""
