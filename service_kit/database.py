"""The MongoDB connection of an app, attached with init_app and reached through `db()`.

Each app holds its own MongoClient in `app.extensions` (the Flask tutorial's pattern, with
pymongo's pooled client in place of a per-request connection). Gunicorn loads the app in
each worker after it forks (no preload), so every worker builds its own client; PyMongo
clients must never cross a fork.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import pymongo
from flask import Flask, current_app
from pymongo.database import Database

if TYPE_CHECKING:
    from pymongo.collection import Collection

    from service_kit.metrics import TimedCollection, TimedDatabase

    # A collection as db() hands it out: pymongo's own, or with metrics on one that times it.
    StoreCollection: TypeAlias = Collection | TimedCollection

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


def db() -> Database | TimedDatabase:
    """The database of the current app (one app per gunicorn worker); with metrics on, its
    operations observe their time (service_kit.metrics.TimedDatabase)."""
    return current_app.extensions[_EXTENSION]


def ping(timeout_seconds: float = 1.0) -> None:
    """Raise unless the database answers a ping within the timeout."""
    with pymongo.timeout(timeout_seconds):
        db().command("ping")


def close(app: Flask) -> None:
    """Close the app's client and its pool. A service's app lives as long as its worker;
    whoever builds apps and lets them go (the in-process tests) closes them with this."""
    app.extensions[_EXTENSION].client.close()
