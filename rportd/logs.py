"""Logging plumbing: the API access log (Combined Log Format, written off the event loop) and
the API's TLS context."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import ssl

from .errors import ConfigError

__all__ = ["COMBINED_LOG_FORMAT", "access_logger", "tls_context"]

COMBINED_LOG_FORMAT = '%a - - %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"'


def access_logger(path: str) -> logging.Logger:
    """A logger whose records a background thread writes to `path` (file I/O never blocks the
    event loop)."""
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError("[api] access_log_file", f"cannot open {path!r}: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter("%(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    atexit.register(listener.stop)
    logger = logging.getLogger("rportd.access")
    logger.handlers = [logging.handlers.QueueHandler(records)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext | None:
    if not cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("[api] cert_file, key_file", f"cannot load the TLS pair: {exc}") from None
    return context
