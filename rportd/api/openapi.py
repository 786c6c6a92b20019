"""The OpenAPI description of what is implemented; a test keeps it equal to the routes."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..auth.tokens import MAX_LIFETIME
from ..client_groups import (
    MAX_DESCRIPTION_LENGTH,
    MAX_ID_LENGTH,
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS_PER_PARAM,
    PARAM_NAMES,
)
from .clients import FILTERABLE

__all__ = ["openapi_spec", "classified"]

_ERROR = {"description": "Error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Errors"}}}}
# Any authenticated call: bad credentials, throttled basic auth, the database (users, tokens)
_AUTHED = ("401", "429", "503")
# Any call with a body: malformed or too deep JSON, too slow, too large, not JSON or a form
_BODY = ("400", "408", "413", "415")
_PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_SORTS = ["id", "name", "os", "hostname", "connection_state", "disconnected_at"]


def _op(op_id: str, summary: str, ok: str = "200", params: list[dict[str, Any]] | None = None,
        errors: tuple[str, ...] = _AUTHED, body: dict[str, Any] | None = None,
        public: bool = False) -> dict[str, Any]:
    responses: dict[str, Any] = {ok: {"description": "Success"}}
    responses.update({code: _ERROR for code in sorted({*errors, *(_BODY if body else ())})})
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary,
                                 "responses": responses}
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"required": True, "content": body}
    if public:
        operation["security"] = []
    return operation


def _path(name: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, description: str, schema: dict[str, Any] | None = None,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _lifetime() -> dict[str, Any]:
    return _query("token-lifetime", "seconds, default 600, at most 90 days",
                  {"type": "integer", "minimum": 1, "maximum": MAX_LIFETIME})


def _login_paths() -> dict[str, Any]:
    credentials = {"type": "object", "required": ["username", "password"], "properties": {
        "username": {"type": "string", "minLength": 1}, "password": {"type": "string"},
        "token-lifetime": {"type": "integer", "minimum": 1, "maximum": MAX_LIFETIME}}}
    form = {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": ["username", "password"], "properties": {
            "username": {"type": "string", "minLength": 1}, "password": {"type": "string"}}}}}
    return {"/api/v1/login": {
        "get": {**_op("loginGet", "Exchange basic auth for a token", params=[_lifetime()],
                      errors=("400", *_AUTHED)), "security": [{"basic": []}]},
        "post": _op("loginPost", "Exchange username and password (JSON or form) for a token",
                    params=[_lifetime()], errors=("401", "429", "503"),
                    body={**_json(credentials), **form}, public=True),
        "delete": {**_op("logout", "Revoke the bearer token sent", ok="204",
                         errors=("400", *_AUTHED)), "security": [{"bearer": []}]},
    }}


def _client_paths() -> dict[str, Any]:
    client_id = _path("id")
    host_port = f"^([^\\s:/]+:)?{_PORT}$"
    return {
        "/api/v1/clients": {"get": _op("listClients", "The caller's clients", errors=(
            "400", *_AUTHED), params=[
            _query("sort", "field, - for descending",
                   {"type": "string", "enum": _SORTS + ["-" + f for f in _SORTS]}),
            _query("page[limit]", "at most 1000", {"type": "integer", "minimum": 1,
                                                   "maximum": 1000}),
            _query("page[offset]", "skip", {"type": "integer", "minimum": 0}),
            _query("filter[id]", "comma-separated, * wildcards; also "
                                 + ", ".join(FILTERABLE[1:]) + " (labels as `key: value`)")])},
        "/api/v1/clients/{id}": {
            "get": _op("getClient", "One client", params=[client_id],
                       errors=("404", *_AUTHED)),
            "delete": _op("deleteClient", "Delete a disconnected client", ok="204",
                          params=[client_id], errors=("400", "404", *_AUTHED)),
        },
        "/api/v1/clients/{id}/tunnels": {"put": _op(
            "createTunnel", "Create a tunnel", params=[
                client_id, _query("remote", "[host:]port on the client",
                                  {"type": "string", "pattern": host_port}, required=True),
                _query("local", "[host:]port on rportd; default a free pool port",
                       {"type": "string", "pattern": host_port}),
                _query("acl", "allowed sources, IPs and CIDRs, comma-separated"),
                _query("scheme", "informational, e.g. ssh"),
                _query("check_port", "0 skips asking the client whether remote is open")],
            errors=("400", "404", "409", *_AUTHED))},
        "/api/v1/clients/{id}/tunnels/{tunnel_id}": {"delete": _op(
            "deleteTunnel", "Close a tunnel", ok="204", params=[client_id, _path("tunnel_id")],
            errors=("404", *_AUTHED))},
    }


def _credential_paths() -> dict[str, Any]:
    new = {"type": "object", "required": ["id", "password"], "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,100}$"},
        "password": {"type": "string", "minLength": 8, "maxLength": 128}}}
    return {
        "/api/v1/clients-auth": {
            "get": _op("listClientCredentials",
                       "Client credential ids of the caller's tenant (never passwords)"),
            "post": _op("createClientCredential",
                        "Create a client credential in the caller's tenant", ok="201",
                        errors=("403", "405", "409", *_AUTHED), body=_json(new)),
        },
        "/api/v1/clients-auth/{id}": {"delete": _op(
            "deleteClientCredential", "Delete a client credential", ok="204",
            params=[_path("id")], errors=("400", "404", "405", *_AUTHED))},
    }


_RESOURCES = ("clients", "tunnels", "commands", "client-groups", "credentials", "users",
              "auditlog", "*")
_PERMISSION_NAMES = {"type": "array", "maxItems": 64, "items": {"type": "string", "enum": [
    "*", *(f"{r}:{a}" for r in _RESOURCES for a in ("read", "write", "*"))]}}
_GROUP_NAME = "^[A-Za-z0-9._@-]([A-Za-z0-9 ._@-]{0,148}[A-Za-z0-9._@-])?$"
_TIME = "^([0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,6})?)?Z?)?)?$"
_GROUPS = {"type": "array", "maxItems": 32, "items": {"type": "string",
                                                      "pattern": _GROUP_NAME}}


def _user_paths() -> dict[str, Any]:
    new = {"type": "object", "required": ["username", "password"], "properties": {
        "username": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,150}$"},
        "password": {"type": "string", "minLength": 8, "maxLength": 128}, "groups": _GROUPS}}
    change = {"type": "object", "properties": {
        "password": {"type": "string", "minLength": 8, "maxLength": 128}, "groups": _GROUPS}}
    username, group = _path("username"), _path("name", _GROUP_NAME)
    edit = ("400", "403", "404", "405", *_AUTHED)

    def update(op_id: str) -> dict[str, Any]:
        return _op(op_id, "Change a user's password and/or groups", ok="204",
                   params=[username], errors=edit, body=_json(change))

    return {
        "/api/v1/users": {
            "get": _op("listUsers", "API users of the caller's tenant (never passwords)",
                       errors=("403", *_AUTHED)),
            "post": _op("createUser", "Create a user in the caller's tenant (the stored name "
                                      "is prefixed with the tenant's tag)", ok="201",
                        errors=("403", "405", "409", *_AUTHED), body=_json(new)),
        },
        "/api/v1/users/{username}": {
            "put": update("updateUser"), "patch": update("patchUser"),
            "delete": _op("deleteUser", "Delete a user (and their tokens)", ok="204",
                          params=[username], errors=edit),
        },
        "/api/v1/user-groups": {"get": _op(
            "listUserGroups", "Groups of the caller's tenant and their permissions",
            errors=("403", *_AUTHED))},
        "/api/v1/user-groups/{name}": {
            "get": _op("getUserGroup", "One group", params=[group],
                       errors=("400", "403", "404", *_AUTHED)),
            "put": _op("putUserGroup", "Grant a group permissions (replaces its grant)",
                       params=[group], errors=("400", "403", *_AUTHED),
                       body=_json({"type": "object", "required": ["permissions"],
                                   "properties": {"permissions": _PERMISSION_NAMES}})),
            "delete": _op("deleteUserGroup", "Remove a group's grant and memberships",
                          ok="204", params=[group], errors=("400", "403", "404", *_AUTHED)),
        },
    }


def _token_paths() -> dict[str, Any]:
    new = {"type": "object", "required": ["scopes"], "properties": {
        "name": {"type": "string", "maxLength": 150},
        "scopes": {**_PERMISSION_NAMES, "minItems": 1},
        "lifetime": {"type": "integer", "minimum": 60, "maximum": 366 * 24 * 3600}}}
    return {
        "/api/v1/me/tokens": {
            "get": _op("listTokens", "The caller's personal tokens (never secrets)",
                       errors=("403", *_AUTHED)),
            "post": _op("createToken", "Create a scoped personal token; the secret is shown "
                                       "once", ok="201", errors=("403", "409", *_AUTHED),
                        body=_json(new)),
        },
        "/api/v1/me/tokens/{id}": {"delete": _op(
            "revokeToken", "Revoke one of the caller's personal tokens", ok="204",
            params=[_path("id")], errors=("403", "404", *_AUTHED))},
    }


def _auditlog_paths() -> dict[str, Any]:
    tenant = _query("filter[tenant]", "exact tenant")
    return {"/api/v1/auditlog": {"get": _op(
        "listAuditLog", "Writes in the caller's tenant, newest first", errors=(
            "400", "403", *_AUTHED), params=_auditlog_params())},
            "/api/v1/operator/auditlog": {"get": _operator_op(
                "listAllAuditLog", "Writes in every tenant, newest first (the operator's view)",
                errors=("400",), params=[tenant, *_auditlog_params()])}}


def _auditlog_params() -> list[dict[str, Any]]:
    filters = [_query(f"filter[{name}]", f"exact {name}") for name in
               ("username", "action", "target", "result")]
    moment = {"type": "string", "pattern": _TIME}
    filters += [_query("filter[since]", "UTC time, e.g. 2026-12-01T19:30:00Z (inclusive)",
                       moment), _query("filter[until]", "UTC time (inclusive)", moment)]
    return [*filters, _query("sort", "at or -at (default)", {"type": "string",
                                                           "enum": ["at", "-at"]}),
            _query("page[limit]", "at most 1000, default 100",
                   {"type": "integer", "minimum": 1, "maximum": 1000}),
            _query("page[offset]", "skip", {"type": "integer", "minimum": 0})]


_NO_NUL = "^[^\\x00]*$"
_JOB_FIELDS: dict[str, Any] = {
    "timeout_sec": {"type": "integer", "minimum": 0, "maximum": 86400},
    "cwd": {"type": "string", "maxLength": 4096, "pattern": _NO_NUL},
    "is_sudo": {"type": "boolean"}, "stream_result": {"type": "boolean"},
    "interpreter": {"type": "string", "maxLength": 256, "pattern": _NO_NUL}}
_BASE64 = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _targets(minimum: int) -> dict[str, Any]:
    return {"client_ids": {"type": "array", "minItems": minimum, "maxItems": 1000,
                           "uniqueItems": True, "items": {"type": "string", "minLength": 1,
                                                          "maxLength": 150}},
            "group_ids": {"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True,
                          "items": {"type": "string", "pattern": _GROUP_ID},
                          "description": "client groups: their connected members"},
            "execute_concurrently": {"type": "boolean"}, "abort_on_error": {"type": "boolean"}}


def _job_body(many: bool, script: bool) -> dict[str, Any]:
    first = ({"script": {"type": "string", "minLength": 4, "maxLength": 1 << 20,
                         "pattern": _BASE64, "description": "the script, base64"}} if script
             else {"command": {"type": "string", "maxLength": 1 << 16,
                               "pattern": "^[^\\x00]*[^\\x00\\s][^\\x00]*$"},
                   "shell": {"type": "string", "enum": ["", "cmd", "powershell"]}})
    fields = {**first, **_JOB_FIELDS, **(_targets(1 if script else 2) if many else {})}
    schema: dict[str, Any] = {"type": "object", "required": ["script" if script else "command"],
                              "properties": fields, "additionalProperties": False}
    if many:
        schema["anyOf"] = [{"required": ["client_ids"]}, {"required": ["group_ids"]}]
    return _json(schema)


def _command_paths() -> dict[str, Any]:
    client, jid = _path("id"), _path("jid")
    started = ("400", "404", "409", "504", *_AUTHED)
    return {
        "/api/v1/clients/{id}/commands": {
            "post": _op("runClientCommand", "Run a command on a client; its job id", params=[
                client], errors=started, body=_job_body(False, False)),
            "get": _op("listClientCommands", "The client's jobs, running first",
                       params=[client])},
        "/api/v1/clients/{id}/commands/{jid}": {"get": _op(
            "getClientCommand", "One job of the client", params=[client, jid],
            errors=("404", *_AUTHED))},
        "/api/v1/clients/{id}/scripts": {"post": _op(
            "runClientScript", "Run a script (base64) on a client", params=[client],
            errors=started, body=_job_body(False, True))},
        "/api/v1/commands": {
            "post": _op("runMultiCommand", "Run a command on several clients",
                        errors=("400", "404", *_AUTHED), body=_job_body(True, False)),
            "get": _op("listMultiCommands", "The tenant's multi-client jobs, newest first")},
        "/api/v1/commands/{jid}": {"get": _op(
            "getMultiCommand", "A multi-client job with its jobs", params=[jid],
            errors=("404", *_AUTHED))},
        "/api/v1/scripts": {"post": _op(
            "runMultiScript", "Run a script (base64) on several clients",
            errors=("400", "404", *_AUTHED), body=_job_body(True, True))},
        "/api/v1/ws/commands": {"get": _op(
            "commandsWebSocket", "WebSocket: send a command request, receive each job as it "
            "ends (token as access_token or a header)", ok="101",
            params=[_query("access_token", "a token from /login (browsers)")],
            errors=("400", *_AUTHED))},
    }


_GROUP_ID = f"^[A-Za-z0-9_*-]{{1,{MAX_ID_LENGTH}}}$"


def _client_group_schema() -> dict[str, Any]:
    patterns = {"type": "array", "nullable": True, "maxItems": MAX_PATTERNS_PER_PARAM,
                "items": {"type": "string", "maxLength": MAX_PATTERN_LENGTH}}
    params = {"type": "object", "nullable": True, "additionalProperties": False,
              "description": "per client property, patterns (case-insensitive, * wildcard); "
                             "a client must match every property given",
              "properties": {name: patterns for name in PARAM_NAMES}}
    return {"type": "object", "required": ["id"], "additionalProperties": False, "properties": {
        "id": {"type": "string", "pattern": _GROUP_ID},
        "description": {"type": "string", "nullable": True,
                        "maxLength": MAX_DESCRIPTION_LENGTH},
        "params": params,
        "client_ids": {"type": "array", "nullable": True, "items": {"type": "string"},
                       "description": "read-only: ignored"}}}


def _client_group_paths() -> dict[str, Any]:
    group_id = _path("id", _GROUP_ID)
    body = _json(_client_group_schema())
    return {
        "/api/v1/client-groups": {
            "get": _op("listClientGroups", "The caller's client groups with their members"),
            "post": _op("createClientGroup", "Create a client group", ok="201",
                        errors=("403", "409", *_AUTHED), body=body),
        },
        "/api/v1/client-groups/{id}": {
            "get": _op("getClientGroup", "One client group with its members",
                       params=[group_id], errors=("400", "404", *_AUTHED)),
            "put": _op("putClientGroup", "Replace a client group, or create it (409 when the "
                       "body's id is not the path's)", ok="204", params=[group_id],
                       errors=("403", "409", *_AUTHED), body=body),
            "delete": _op("deleteClientGroup", "Delete a client group", ok="204",
                          params=[group_id], errors=("400", "404", *_AUTHED)),
        },
    }


_OPERATOR = ("401", "421", "503")  # no or a wrong operator key; the Host rules; the database
_QUOTAS = {"type": "object", "additionalProperties": False, "properties": {
    kind: {"type": "integer", "minimum": 0, "maximum": 1_000_000, "nullable": True}
    for kind in ("clients", "credentials", "users", "tunnels", "commands")}}
_TENANT_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$"}


def _operator_op(op_id: str, summary: str, ok: str = "200", errors: tuple[str, ...] = (),
                 **kwargs: Any) -> dict[str, Any]:
    operation = _op(op_id, summary, ok, errors=(*errors, *_OPERATOR), **kwargs)
    operation["security"] = [{"operator": []}]
    operation["tags"] = ["operator"]
    return operation


def _tenant_paths() -> dict[str, Any]:
    name = _path("name", "^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$")
    new = {"type": "object", "required": ["name"], "properties": {
        "name": _TENANT_NAME, "quotas": _QUOTAS}}
    first_admin = {"type": "object", "required": ["name", "username", "password"],
                   "properties": {"name": _TENANT_NAME,
                                  "username": {"type": "string", "pattern": (
                                      "^[^:\\u0000-\\u0020\\u007f]"
                                      "([^:]{0,148}[^:\\u0000-\\u0020\\u007f])?$")},
                                  "password": {"type": "string", "minLength": 8,
                                               "maxLength": 128},
                                  "quotas": _QUOTAS}}
    patch = {"type": "object", "additionalProperties": False, "properties": {
        "quotas": _QUOTAS, "status": {"type": "string", "enum": ["active", "suspended"]}}}
    force = _query("force", "true: disconnect the tenant's clients first",
                   {"type": "string", "enum": ["true", "false", "1", "0"]})
    return {
        "/api/v1/tenants": {
            "get": _operator_op("listTenants", "Every tenant, with usage against quotas"),
            "post": _operator_op("createTenant", "Record a tenant (with quotas)", ok="201",
                                 errors=("405", "409"), body=_json(new)),
        },
        "/api/v1/tenants/install": {"post": _operator_op(
            "installTenant", "A tenant and its first admin (group Administrators), at once",
            ok="201", errors=("405", "409"), body=_json(first_admin))},
        "/api/v1/tenants/{name}": {
            "get": _operator_op("getTenant", "One tenant with its usage", params=[name],
                                errors=("404",)),
            "patch": _operator_op("patchTenant", "Change quotas (null: unlimited)",
                                  params=[name], errors=("404", "405"), body=_json(patch)),
            "delete": _operator_op("deleteTenant", "Remove every trace of a tenant",
                                   params=[name, force],
                                   errors=("400", "404", "405", "409")),
        },
        "/api/v1/operator/status": {"get": _operator_op(
            "operatorStatus", "Totals over all tenants, orphaned clients")},
        "/metrics": {"get": _operator_op("metrics", "Per-tenant gauges, Prometheus text")},
    }


def openapi_spec() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "rportd API", "version": __version__,
                 "description": "rport's API with tenant isolation. Errors: "
                                "{\"errors\": [{\"code\", \"title\", \"detail\"}]}; 503 "
                                "ERR_CODE_DATABASE_UNAVAILABLE when the database does not "
                                "answer within [database] db_timeout."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "basic": {"type": "http", "scheme": "basic"},
                                "operator": {"type": "http", "scheme": "bearer",
                                             "description": "[api] operator_key"}},
            "schemas": {"Errors": {"type": "object", "required": ["errors"], "properties": {
                "errors": {"type": "array", "items": {
                    "type": "object", "required": ["code", "title", "detail"], "properties": {
                        "code": {"type": "string"}, "title": {"type": "string"},
                        "detail": {"type": "string"}}}}}}},
        },
        "security": [{"bearer": []}, {"basic": []}],
        "paths": {
            "/api/v1/health": {"get": _op("health", "Liveness", errors=(), public=True)},
            "/api/v1/openapi.json": {"get": _op("openapi", "This document", errors=(),
                                                public=True)},
            **_login_paths(),
            "/api/v1/me": {"get": _op("me", "The caller: username, groups, tenant, "
                                            "permissions (and a personal token's scopes)")},
            **_token_paths(),
            "/api/v1/status": {"get": _op("status",
                                          "Version, the caller's client counts, fingerprint")},
            **_client_paths(),
            **_credential_paths(),
            **_user_paths(),
            **_auditlog_paths(),
            **_command_paths(),
            **_client_group_paths(),
            **_tenant_paths(),
        },
    }


def classified(spec: dict[str, Any], routes: list[tuple[str, str, str]],
               resources: tuple[str, ...]) -> dict[str, Any]:
    """Each operation's permission (`x-rportd-permission`, and 403 among its answers when it
    names a resource), and the READ and WRITE lists (`x-rportd-permissions`), from the routes:
    what the middleware enforces is what is served."""
    lists: dict[str, list[str]] = {"read": [], "write": [], "public": [], "self": [],
                                   "operator": []}
    for method, path, permission in routes:
        operation = spec["paths"].get(path, {}).get(method.lower())
        if operation is None:
            continue
        operation["x-rportd-permission"] = permission
        kind = permission.partition(":")[2] or permission
        if kind in ("read", "write"):
            operation["responses"].setdefault("403", _ERROR)
        lists.setdefault(kind, []).append(f"{method} {path}")
    spec["x-rportd-permissions"] = {"resources": list(resources), **lists}
    return spec
