"""The OpenAPI description of what is implemented; a test keeps it equal to the routes."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..auth.tokens import MAX_LIFETIME

__all__ = ["openapi_spec"]

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
            _query("filter[id]", "comma-separated, * wildcards; also name, os, hostname, "
                                 "tags, connection_state, os_kernel, os_family, "
                                 "client_auth_id")])},
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
            "/api/v1/me": {"get": _op("me", "The caller: username, groups, tenant")},
            "/api/v1/status": {"get": _op("status",
                                          "Version, the caller's client counts, fingerprint")},
            **_client_paths(),
            **_credential_paths(),
            **_tenant_paths(),
        },
    }
