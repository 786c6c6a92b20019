"""Storage: one small async interface over SQLite and MySQL/MariaDB, and the migration runner."""

from .base import Store, open_store

__all__ = ["Store", "open_store"]
