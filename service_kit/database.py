"""The MongoDB connection of an app, attached with init_app and reached through `db()`.

Each app holds its own MongoClient in `app.extensions` (the Flask tutorial's pattern, with
pymongo's pooled client in place of a per-request connection). Gunicorn loads the app in
each worker after it forks (no preload), so every worker builds its own client; PyMongo
clients must never cross a fork.
"""

from __future__ import annotations

import pymongo
from flask import Flask, current_app
from pymongo.database import Database

_EXTENSION = "chatsys.database"


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    timeout_ms = int(settings.mongo_timeout_seconds * 1000)
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_uri,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 3, 5000),
        appname=settings.instance,
        connect=False,
    )
    try:
        database = client.get_default_database()
    except pymongo.errors.ConfigurationError:
        raise SystemExit("MONGO_URI must name a database, e.g. mongodb://127.0.0.1:27017/chatsys") from None
    if settings.metrics_enabled:
        # The stores' calls are timed where they reach a collection: cheaper than pymongo's
        # command monitoring, which builds event objects for every command.
        from service_kit.metrics import TimedDatabase

        app.extensions[_EXTENSION] = TimedDatabase(database)
    else:
        app.extensions[_EXTENSION] = database


def db() -> Database:
    """The database of the current app (one app per gunicorn worker). With metrics on, a
    service_kit.metrics.TimedDatabase stands in for it: the same methods, its collections'
    operations timed."""
    return current_app.extensions[_EXTENSION]


def ping(timeout_seconds: float = 1.0) -> None:
    """Raise unless the database answers a ping within the timeout."""
    with pymongo.timeout(timeout_seconds):
        db().command("ping")


def close(app: Flask) -> None:
    """Close the app's client and its pool. A service's app lives as long as its worker;
    whoever builds apps and lets them go (the in-process tests) closes them with this."""
    app.extensions[_EXTENSION].client.close()
