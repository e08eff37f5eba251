"""The MongoDB connection, attached per app with init_app.

Gunicorn loads the app in each worker after it forks (no preload), so every worker
builds its own MongoClient; PyMongo clients must never cross a fork.
"""
from __future__ import annotations

from flask import Flask
from flask_pymongo import PyMongo
import pymongo

mongo = PyMongo()


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    timeout_ms = int(settings.mongo_timeout_seconds * 1000)
    mongo.init_app(
        app,
        uri=settings.mongo_uri,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 3, 5000),
        appname=settings.instance,
    )
    if mongo.db is None:
        raise SystemExit("MONGO_URI must name a database, e.g. mongodb://127.0.0.1:27017/chatsys")


def db():
    """The database of this process's app (one app per gunicorn worker)."""
    return mongo.db


def ping(timeout_seconds: float = 1.0) -> None:
    """Raise unless the database answers a ping within the timeout."""
    with pymongo.timeout(timeout_seconds):
        mongo.db.command("ping")


def is_duplicate_key(error: Exception) -> bool:
    return isinstance(error, pymongo.errors.DuplicateKeyError)
