"""The OpenAPI description of what is implemented; a test keeps it equal to the routes."""

from __future__ import annotations

from typing import Any

from .. import __version__

__all__ = ["openapi_spec"]

_ERROR = {"description": "Error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Errors"}}}}


def _op(summary: str, ok: str = "200", params: list[dict[str, Any]] | None = None,
        errors: tuple[str, ...] = ("401",), body: dict[str, Any] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {ok: {"description": "Success"}}
    responses.update({code: _ERROR for code in errors})
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"content": {"application/json": {"schema": body}}}
    return operation


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": {"type": "string"}}


def openapi_spec() -> dict[str, Any]:
    lifetime = _query("token-lifetime", "seconds, default 600, at most 90 days")
    client_id = _path("id")
    return {
        "openapi": "3.0.3",
        "info": {"title": "rportd API", "version": __version__,
                 "description": "rport's API with tenant isolation. Errors: "
                                "{\"errors\": [{\"code\", \"title\", \"detail\"}]}."},
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Errors": {"type": "object", "properties": {"errors": {
                "type": "array", "items": {"type": "object", "properties": {
                    "code": {"type": "string"}, "title": {"type": "string"},
                    "detail": {"type": "string"}}}}}}},
        },
        "security": [{"basic": []}, {"bearer": []}],
        "paths": {
            "/api/v1/health": {"get": {**_op("Liveness", errors=()), "security": []}},
            "/api/v1/openapi.json": {"get": {**_op("This document", errors=()), "security": []}},
            "/api/v1/login": {
                "get": _op("Exchange basic auth for a token", params=[lifetime],
                           errors=("400", "401", "429")),
                "post": {**_op("Exchange username and password (JSON or form) for a token",
                               params=[lifetime], errors=("400", "401", "429"),
                               body={"type": "object", "properties": {
                                   "username": {"type": "string"},
                                   "password": {"type": "string"}}}), "security": []},
                "delete": _op("Revoke the bearer token sent", ok="204", errors=("400", "401")),
            },
            "/api/v1/me": {"get": _op("The caller: username, groups, tenant")},
            "/api/v1/status": {"get": _op("Version, the caller's client counts, fingerprint")},
            "/api/v1/clients": {"get": _op("The caller's clients", errors=("400", "401"), params=[
                _query("sort", "field, - for descending"),
                _query("page[limit]", "at most 1000"), _query("page[offset]", "skip"),
                _query("filter[id]", "comma-separated, * wildcards; also name, os, hostname, "
                                     "tags, connection_state, os_kernel, os_family, "
                                     "client_auth_id")])},
            "/api/v1/clients/{id}": {
                "get": _op("One client", params=[client_id], errors=("401", "404")),
                "delete": _op("Delete a disconnected client", ok="204", params=[client_id],
                              errors=("400", "401", "404")),
            },
            "/api/v1/clients/{id}/tunnels": {"put": _op(
                "Create a tunnel", params=[
                    client_id, _query("remote", "[host:]port on the client", required=True),
                    _query("local", "[host:]port on rportd; default a free pool port"),
                    _query("acl", "allowed sources, IPs and CIDRs, comma-separated"),
                    _query("scheme", "informational, e.g. ssh"),
                    _query("check_port", "0 skips asking the client whether remote is open")],
                errors=("400", "401", "404", "409"))},
            "/api/v1/clients/{id}/tunnels/{tunnel_id}": {"delete": _op(
                "Close a tunnel", ok="204", params=[client_id, _path("tunnel_id")],
                errors=("401", "404"))},
            "/api/v1/clients-auth": {
                "get": _op("Client credential ids of the caller's tenant (never passwords)"),
                "post": _op("Create a client credential in the caller's tenant", ok="201",
                            errors=("400", "401", "403", "405", "409"),
                            body={"type": "object", "required": ["id", "password"],
                                  "properties": {"id": {"type": "string"},
                                                 "password": {"type": "string"}}}),
            },
            "/api/v1/clients-auth/{id}": {"delete": _op(
                "Delete a client credential", ok="204", params=[_path("id")],
                errors=("400", "401", "404", "405"))},
        },
    }
