"""GET /ws/commands: run a command on the caller's clients and stream each job as it ends.

As rport: the token comes as `access_token` in the query (or an Authorization header); the
first message is the request (rport's ExecuteCmdRequest: client_ids, group_ids, command, ...);
a bad one gets rport's ErrorPayload and the close. Then one Job JSON per client as it ends (a
job that could not start carries its `error`), and the server closes once all have ended.
With `stream_result`, output chunks `{"jid", "stream", "data"}` come before.

Only jobs this connection started reach it, so it streams only the caller's tenant's results.
What waits for a slow reader is bounded: at most SEND_QUEUE messages (each within the stored
output cap); a reader that falls further behind is cut off, its jobs carry on and are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from ..errors import BadRequest, RportdError
from ..jobs import CommandRefused, Job, JobSpec, NoAnswer
from .auth import CALLER
from .commands import job_service
from .context import CONTEXT
from .job_requests import parse_command, resolve_targets

__all__ = ["commands_ws", "SEND_QUEUE", "SEND_TIMEOUT"]

log = logging.getLogger("rportd.api")

SEND_QUEUE = 64
SEND_TIMEOUT = 30.0
_DONE = object()


class _Stream:
    """The JobListener of one WebSocket: a bounded queue between the jobs and the socket."""

    def __init__(self, expected: int):
        self.queue: asyncio.Queue[object] = asyncio.Queue(SEND_QUEUE)
        self._remaining = expected
        self.overflowed = False

    def _put(self, item: object) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True

    def job_done(self, job: Job) -> None:
        self._put(job)
        self._remaining -= 1
        if self._remaining <= 0:
            self.all_done()

    def all_done(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_DONE)
        self._remaining = 0

    def output(self, jid: str, stream: str, text: str) -> None:
        if self.queue.qsize() < SEND_QUEUE // 2:  # chunks give way to results
            self._put({"jid": jid, "stream": stream, "data": text})


def _error(exc: RportdError) -> str:
    return json.dumps({"errors": [{"code": exc.code, "title": exc.title,
                                   "detail": exc.detail}]})


async def commands_ws(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=request.app[CONTEXT].config.api.max_request_bytes,
                               heartbeat=30.0)
    if not ws.can_prepare(request).ok:
        raise BadRequest("this endpoint needs a WebSocket upgrade", code="ERR_CODE_NOT_WEBSOCKET")
    await ws.prepare(request)
    try:
        await _serve(request, ws)
    except RportdError as exc:
        await ws.send_str(_error(exc))
    finally:
        await ws.close()
    return ws


async def _first_message(request: web.Request, ws: web.WebSocketResponse) -> Any:
    timeout = request.app[CONTEXT].config.api.read_timeout
    try:
        message = await ws.receive(timeout)
    except TimeoutError:
        raise BadRequest(f"no command request within {timeout:g}s",
                         code="ERR_CODE_REQUEST_TIMEOUT") from None
    if message.type is not WSMsgType.TEXT:
        raise BadRequest("the first message must be the command request as JSON",
                         code="ERR_CODE_INVALID_JSON")
    try:
        return json.loads(message.data)
    except ValueError:
        raise BadRequest("the command request is not valid JSON",
                         code="ERR_CODE_INVALID_JSON") from None


async def _serve(request: web.Request, ws: web.WebSocketResponse) -> None:
    jobs = job_service(request)
    parsed = parse_command(await _first_message(request, ws), jobs.default_timeout, many=True,
                           minimum=1)
    caller = request[CALLER]
    ctx = request.app[CONTEXT]
    records = await resolve_targets(ctx.registry, ctx.groups, caller.scope, parsed)
    stream = _Stream(len(records))
    if len(records) == 1 and not parsed.group_ids:
        await _one(request, records[0].id, parsed.spec, stream)
    else:
        await jobs.start_multi(caller.scope.tenant or "", records, parsed.spec,
                               caller.user.username, (parsed.client_ids, parsed.group_ids),
                               parsed.concurrent, parsed.abort_on_err, listener=stream)
    await _pump(ws, stream)


async def _one(request: web.Request, client_id: str, spec: JobSpec, stream: _Stream) -> None:
    """One client: as rport, a job refused by the client is sent with its error, not kept."""
    caller = request[CALLER]
    record = request.app[CONTEXT].registry.get(caller.scope, client_id)
    try:
        await job_service(request).run_on_client(record, spec, caller.user.username, stream)
    except (CommandRefused, NoAnswer) as exc:
        stream.job_done({"jid": None, "status": "failed", "client_id": client_id,
                         "command": spec.command, "error": exc.detail})


async def _pump(ws: web.WebSocketResponse, stream: _Stream) -> None:
    """Send until every job ended, the peer left, or it reads too slowly."""
    reader = asyncio.ensure_future(_until_closed(ws))
    try:
        while not reader.done():
            getter = asyncio.ensure_future(stream.queue.get())
            await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                return
            item = getter.result()
            if item is _DONE or stream.overflowed:
                if stream.overflowed:
                    log.warning("/ws/commands: the reader fell behind; closing")
                return
            await asyncio.wait_for(ws.send_str(json.dumps(item)), SEND_TIMEOUT)
    except TimeoutError:
        log.warning("/ws/commands: the reader took over %ss; closing", SEND_TIMEOUT)
    finally:
        reader.cancel()


async def _until_closed(ws: web.WebSocketResponse) -> None:
    """rport closes when the UI sends anything (or closes); other messages are ignored here
    until then."""
    async for message in ws:
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            return
