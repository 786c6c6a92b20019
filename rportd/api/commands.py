"""/clients/{id}/commands, /commands and the script endpoints, with rport's job JSON.

Jobs are read with the caller's scope (jobs/store.py): another tenant's job, or a job of
another tenant's client, answers exactly like a missing one."""

from __future__ import annotations

from aiohttp import web

from ..errors import NotFound
from ..jobs import JobService
from .auth import CALLER
from .bodies import read_json
from .context import CONTEXT
from .job_requests import CommandRequest, parse_command, parse_script, resolve_targets

__all__ = ["post_client_command", "list_client_commands", "get_client_command",
           "post_multi_command", "list_multi_commands", "get_multi_command",
           "post_client_script", "post_multi_script", "job_service"]


def job_service(request: web.Request) -> JobService:
    jobs = request.app[CONTEXT].jobs
    if jobs is None:
        raise NotFound("remote commands are not available", code="ERR_CODE_NOT_FOUND")
    return jobs


def _jid(data: dict[str, object]) -> web.Response:
    return web.json_response({"data": {"jid": data["jid"]}})


async def _run_one(request: web.Request, parsed: CommandRequest) -> web.Response:
    record = request.app[CONTEXT].registry.get(request[CALLER].scope, request.match_info["id"])
    job = await job_service(request).run_on_client(record, parsed.spec,
                                                   request[CALLER].user.username)
    return _jid(job)


async def _run_many(request: web.Request, parsed: CommandRequest) -> web.Response:
    caller, jobs = request[CALLER], job_service(request)
    ctx = request.app[CONTEXT]
    records = await resolve_targets(ctx.registry, ctx.groups, caller.scope, parsed)
    tenant = caller.scope.tenant or ""  # without multi-tenancy every client is under ""
    multi = await jobs.start_multi(tenant, records, parsed.spec, caller.user.username,
                                   (parsed.client_ids, parsed.group_ids), parsed.concurrent,
                                   parsed.abort_on_err)
    return _jid(multi)


async def post_client_command(request: web.Request) -> web.Response:
    timeout = job_service(request).default_timeout
    return await _run_one(request, parse_command(await read_json(request), timeout))


async def post_client_script(request: web.Request) -> web.Response:
    timeout = job_service(request).default_timeout
    return await _run_one(request, parse_script(await read_json(request), timeout))


async def post_multi_command(request: web.Request) -> web.Response:
    timeout = job_service(request).default_timeout
    return await _run_many(request, parse_command(await read_json(request), timeout, many=True))


async def post_multi_script(request: web.Request) -> web.Response:
    timeout = job_service(request).default_timeout
    return await _run_many(request, parse_script(await read_json(request), timeout, many=True))


async def list_client_commands(request: web.Request) -> web.Response:
    summaries = await job_service(request).store.client_jobs(request[CALLER].scope,
                                                             request.match_info["id"])
    return web.json_response({"data": summaries})


async def get_client_command(request: web.Request) -> web.Response:
    job = await job_service(request).store.job(request[CALLER].scope, request.match_info["id"],
                                               request.match_info["jid"])
    return web.json_response({"data": job})


async def list_multi_commands(request: web.Request) -> web.Response:
    return web.json_response({"data": await job_service(request).store.multi_jobs(
        request[CALLER].scope)})


async def get_multi_command(request: web.Request) -> web.Response:
    multi = await job_service(request).store.multi_job(request[CALLER].scope,
                                                       request.match_info["jid"])
    return web.json_response({"data": multi})
