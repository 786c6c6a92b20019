"""The error tree: every error rportd raises on purpose, with rport's API codes."""

from __future__ import annotations

__all__ = [
    "RportdError",
    "ConfigError",
    "StoreError",
    "DatabaseUnavailable",
    "NotFound",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "Conflict",
    "MethodNotAllowed",
    "TransferRefused",
]


class RportdError(Exception):
    """Root of rportd's errors; `status` and `code` shape the API answer."""

    status = 500
    code = "ERR_CODE_INTERNAL"
    title = "Internal error"

    def __init__(self, detail: str = "", *, code: str | None = None, title: str | None = None):
        super().__init__(detail or self.title)
        self.detail = detail
        if code:
            self.code = code
        if title:
            self.title = title


class ConfigError(RportdError):
    """A setting that makes rportd refuse to start; `setting` names it for the operator."""

    def __init__(self, setting: str, message: str):
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


class StoreError(RportdError):
    """The database could not do what was asked (unreachable, missing table, bad schema)."""


class DatabaseUnavailable(StoreError):
    """The database did not answer in time or refused the connection. The API answers 503 with
    no driver text; the cause goes to the server log."""

    status = 503
    code = "ERR_CODE_DATABASE_UNAVAILABLE"
    title = "Database unavailable"


class BadRequest(RportdError):
    status = 400
    code = "ERR_CODE_INVALID_REQUEST"
    title = "Invalid request"


class Unauthorized(RportdError):
    status = 401
    code = "ERR_CODE_UNAUTHORIZED"
    title = "Unauthorized"


class Forbidden(RportdError):
    status = 403
    code = "ERR_CODE_FORBIDDEN"
    title = "Forbidden"


class NotFound(RportdError):
    status = 404
    code = "ERR_CODE_NOT_FOUND"
    title = "Not found"


class MethodNotAllowed(RportdError):
    status = 405
    code = "ERR_CODE_METHOD_NOT_ALLOWED"
    title = "Method not allowed"


class Conflict(RportdError):
    status = 409
    code = "ERR_CODE_CONFLICT"
    title = "Conflict"


class TransferRefused(RportdError):
    """A tenant import or export that must not happen as asked (conflicts, another host key, a
    bad archive, a running rportd): nothing was changed. `reasons` lists every cause."""

    code = "ERR_CODE_TRANSFER_REFUSED"
    title = "Transfer refused"

    def __init__(self, detail: str, reasons: list[str] | None = None):
        super().__init__(detail)
        self.reasons = list(reasons or [])
