"""A fake OpenAI-compatible HTTP server (also the seed's llm-service) on a real loopback socket.

It runs its own event loop in a background thread and speaks HTTP/1.1 by hand, so a test
can script what happens on the wire, request by request::

    with FakeUpstream() as up:
        up.script(Fail(429, retry_after=2), Reply("Xin chào"))
        ...  # point a client at up.base_url ("http://127.0.0.1:PORT/v1")
        assert up.requests[-1].json["model"] == "fake-model"

Each POST to ``/v1/chat/completions``, ``/v1/completions`` or ``/v1/generate`` takes the
next scripted behaviour, or ``up.default`` when the script is empty. Whether a chat or
completions answer is streamed follows the request's ``"stream"`` (``chat.completion.chunk``
or ``text_completion`` events). ``GET /health`` and ``GET /v1/models`` always answer.
``up.sent`` records when each streamed event went out (``time.monotonic()``), and
``up.abandoned`` counts answers whose client hung up before they ended.

Behaviours: :class:`Reply` (answer; streamed, slow or split mid-UTF-8 on the wire),
:class:`Fail` (an HTTP error, e.g. 429 with Retry-After, 500/502/503), :class:`Hang`,
:class:`Reset` (TCP reset), :class:`Drop` (connection closed mid-body/mid-stream),
:class:`Malformed` (invalid JSON).
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

# --- behaviours ---------------------------------------------------------------------


@dataclass
class Reply:
    """Answer with ``text``. Streamed as ``deltas`` (default: word by word).

    ``wire_bytes`` writes the response body to the socket that many bytes at a time
    (with a pause between writes), so multi-byte UTF-8 characters arrive split across
    TCP reads. ``delay`` waits before the response head; ``chunk_delay`` between events.

    ``tool_calls`` (OpenAI's shape: ``id``, ``type``, ``function`` with ``name`` and
    ``arguments``) are answered as they are, streamed as deltas (the arguments in two
    pieces); with them an empty ``text`` is ``content: null``. ``logprobs`` is the choice's
    (streamed: on the first text chunk), ``refusal`` the message's (streamed: its own delta).
    """

    text: str = "Xin chào, đây là câu trả lời [1]."
    deltas: list[str] | None = None
    finish_reason: str = "stop"
    model: str | None = None
    wire_bytes: int | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    tool_calls: list[dict[str, Any]] | None = None
    logprobs: dict[str, Any] | None = None
    refusal: str | None = None

    def pieces(self) -> list[str]:
        if self.deltas is not None:
            return list(self.deltas)
        if not self.text and (self.tool_calls or self.refusal):
            return []
        words = self.text.split(" ")
        return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


@dataclass
class Fail:
    """Answer an HTTP error with an OpenAI error body (and ``Retry-After`` if given)."""

    status: int = 500
    message: str = "fake upstream failure"
    retry_after: float | None = None
    type: str = "server_error"


@dataclass
class Hang:
    """Read the request and never answer (until ``seconds`` pass or the server stops)."""

    seconds: float = 3600.0


@dataclass
class Reset:
    """Read the request, then reset the TCP connection (RST, no response)."""


@dataclass
class Drop:
    """Start answering, then close the connection: after ``after`` stream events, or
    half-way through a non-stream body."""

    text: str = "Câu trả lời bị cắt giữa chừng"
    after: int = 2


@dataclass
class Malformed:
    """A 200 whose body (or, streaming, whose second event) is not valid JSON."""


Behaviour = Reply | Fail | Hang | Reset | Drop | Malformed


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any] = field(default_factory=dict)
    reader: asyncio.StreamReader | None = None


# --- the server ---------------------------------------------------------------------


class FakeUpstream:
    """The fake server; start with ``with FakeUpstream() as up`` or :meth:`start`/:meth:`stop`."""

    def __init__(self, *, model: str = "fake-model", models: list[str] | None = None) -> None:
        self.model = model
        self.models = models or [model]
        self.default: Behaviour = Reply()
        self.healthy = True
        self.requests: list[Recorded] = []
        self.models_status = 200
        """Status of ``GET /v1/models`` (e.g. 401 for a refused key); 200 lists the models."""
        self.abandoned = 0
        """Requests whose client closed the connection before the answer ended (while
        :class:`Hang` held it, or mid-stream)."""
        self.sent: list[tuple[float, bytes]] = []
        """Each streamed event as it went out: (``time.monotonic()`` after the write, bytes)."""
        self.in_flight = 0
        self.max_in_flight = 0
        """Most POSTs being answered at once (shows that a client sent them concurrently)."""
        self._script: collections.deque[Behaviour] = collections.deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._release: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    # --- control (any thread) -------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def script(self, *behaviours: Behaviour) -> FakeUpstream:
        """Queue behaviours for the next POSTs, in order."""
        with self._lock:
            self._script.extend(behaviours)
        return self

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.sent.clear()

    def _next(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def start(self) -> FakeUpstream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._open())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake upstream did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the loop's side ------------------------------------------------------------

    async def _open(self) -> None:
        self._release = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self._server is not None and self._release is not None
        self._release.set()
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.sleep(0)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                request = await self._read(reader)
                if request is None or not await self._answer(request, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> _Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        path = target.split("?", 1)[0]
        self.requests.append(Recorded(method, path, headers, body))
        payload: dict[str, Any] = {}
        if body:
            try:
                loaded = json.loads(body)
                payload = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                payload = {}
        return _Request(method, path, headers, body, payload, reader)

    async def _answer(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False closes the connection."""
        if request.method == "GET" and request.path in ("/health", "/v1/health"):
            status = 200 if self.healthy else 503
            await _send_json(
                writer, status, {"status": "ok" if self.healthy else "down", "model": self.model}
            )
            return True
        if request.method == "GET" and request.path == "/v1/models" and self.models_status != 200:
            await _send_json(
                writer, self.models_status, _error("fake /models refusal", "invalid_request_error")
            )
            return True
        if request.method == "GET" and request.path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
            await _send_json(writer, 200, {"object": "list", "data": data})
            return True
        if request.method != "POST" or request.path not in _POST_PATHS:
            await _send_json(writer, 404, _error(f"no route {request.method} {request.path}", "not_found"))
            return True
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._post(request, writer)
        finally:
            self.in_flight -= 1

    async def _post(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        behaviour = self._next()
        stream = bool(request.payload.get("stream")) and request.path in _STREAM_PATHS
        if isinstance(behaviour, Fail):
            headers = {}
            if behaviour.retry_after is not None:
                headers["Retry-After"] = f"{behaviour.retry_after:g}"
            await _send_json(writer, behaviour.status, _error(behaviour.message, behaviour.type), headers)
            return True
        if isinstance(behaviour, Hang):
            assert self._release is not None and request.reader is not None
            released = asyncio.ensure_future(self._release.wait())
            closed = asyncio.ensure_future(request.reader.read(1))  # b"": the client hung up
            done, pending = await asyncio.wait(
                {released, closed}, timeout=behaviour.seconds, return_when="FIRST_COMPLETED"
            )
            for task in pending:
                task.cancel()
            if closed in done and closed.result() == b"":
                self.abandoned += 1
            return False
        if isinstance(behaviour, Reset):
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if isinstance(behaviour, Malformed):
            if stream:
                await _start_stream(writer)
                model = request.payload.get("model") or self.model
                await _send_chunk(
                    writer, _sse(_chunk("chatcmpl-bad", model, {"role": "assistant", "content": ""}))
                )
                await _send_chunk(writer, b'data: {"id": "chatcmpl-bad", "choices": [{"delta": {"cont\n\n')
                await _send_chunk(writer, b"data: [DONE]\n\n")
                await _send_chunk(writer, b"")
            else:
                await _send_raw(writer, 200, "application/json", b'{"id": "chatcmpl-bad", "choices": [')
            return True
        if isinstance(behaviour, Drop):
            reply = Reply(behaviour.text)
            if stream:
                await _start_stream(writer)
                for event in self._events(request, reply)[: behaviour.after]:
                    await _send_chunk(writer, event)
            else:
                body = json.dumps(self._completion(request, reply), ensure_ascii=False).encode()
                head = _head(200, "application/json", {"Content-Length": str(len(body))})
                writer.write(head + body[: len(body) // 2])
            await writer.drain()
            writer.close()
            return False
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if stream:
            await _start_stream(writer)
            for event in self._events(request, behaviour):
                if behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
                if _hung_up(request, writer):
                    self.abandoned += 1
                    return False
                try:
                    await _send_chunk(writer, event, behaviour.wire_bytes)
                except ConnectionError:
                    self.abandoned += 1
                    return False
                self.sent.append((time.monotonic(), event))
            await _send_chunk(writer, b"")
            return True
        if request.path == "/v1/generate":
            payload = self._generated(request, behaviour)
        elif request.path == "/v1/completions":
            payload = self._text_completion(request, behaviour)
        else:
            payload = self._completion(request, behaviour)
        body = json.dumps(payload, ensure_ascii=False).encode()
        await _send_raw(writer, 200, "application/json", body, wire_bytes=behaviour.wire_bytes)
        return True

    # --- bodies ---------------------------------------------------------------------

    def _usage(self, request: _Request, text: str) -> dict[str, int]:
        messages = request.payload.get("messages") or [{"content": request.payload.get("prompt", "")}]
        prompt = sum(len(str(m.get("content") or "").split()) for m in messages if isinstance(m, dict))
        completion = len(text.split())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _completion(self, request: _Request, reply: Reply) -> dict[str, Any]:
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:16],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or request.payload.get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": self._message(reply),
                    "finish_reason": reply.finish_reason,
                    "logprobs": reply.logprobs,
                }
            ],
            "usage": self._usage(request, reply.text),
        }

    def _message(self, reply: Reply) -> dict[str, Any]:
        content = None if not reply.text and (reply.tool_calls or reply.refusal) else reply.text
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reply.tool_calls is not None:
            message["tool_calls"] = reply.tool_calls
        if reply.refusal is not None:
            message["refusal"] = reply.refusal
        return message

    def _tool_call_events(self, cid: str, model: str, reply: Reply) -> list[bytes]:
        events = []
        for i, call in enumerate(reply.tool_calls or []):
            function = call.get("function") or {}
            arguments = str(function.get("arguments", ""))
            head = {
                "index": i,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": function.get("name"), "arguments": arguments[: len(arguments) // 2]},
            }
            tail = {"index": i, "function": {"arguments": arguments[len(arguments) // 2 :]}}
            events += [_sse(_chunk(cid, model, {"tool_calls": [part]})) for part in (head, tail)]
        return events

    def _generated(self, request: _Request, reply: Reply) -> dict[str, Any]:
        return {
            "generated_text": reply.text,
            "model": reply.model or self.model,
            "finish_reason": reply.finish_reason,
            "usage": self._usage(request, reply.text),
        }

    def _text_completion(self, request: _Request, reply: Reply) -> dict[str, Any]:
        return {
            "id": "cmpl-" + uuid.uuid4().hex[:16],
            "object": "text_completion",
            "created": int(time.time()),
            "model": reply.model or request.payload.get("model") or self.model,
            "choices": [
                {"index": 0, "text": reply.text, "finish_reason": reply.finish_reason, "logprobs": None}
            ],
            "usage": self._usage(request, reply.text),
        }

    def _text_completion_events(self, request: _Request, reply: Reply) -> list[bytes]:
        """``/v1/completions`` streamed: a ``text_completion`` per piece, the finish reason
        on the last (empty text), usage when asked for, ``[DONE]``."""
        cid = "cmpl-" + uuid.uuid4().hex[:16]
        model = reply.model or request.payload.get("model") or self.model

        def event(text: str, finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            return {
                "id": cid,
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
            }

        events = [_sse(event(piece)) for piece in reply.pieces()]
        events.append(_sse(event("", reply.finish_reason)))
        if (request.payload.get("stream_options") or {}).get("include_usage"):
            usage = {**event(""), "choices": [], "usage": self._usage(request, reply.text)}
            events.append(_sse(usage))
        events.append(b"data: [DONE]\n\n")
        return events

    def _events(self, request: _Request, reply: Reply) -> list[bytes]:
        if request.path == "/v1/completions":
            return self._text_completion_events(request, reply)
        cid = "chatcmpl-" + uuid.uuid4().hex[:16]
        model = reply.model or request.payload.get("model") or self.model
        events = [_sse(_chunk(cid, model, {"role": "assistant", "content": ""}))]
        if reply.refusal is not None:
            events.append(_sse(_chunk(cid, model, {"refusal": reply.refusal})))
        for i, piece in enumerate(reply.pieces()):
            chunk = _chunk(cid, model, {"content": piece})
            if i == 0 and reply.logprobs is not None:
                chunk["choices"][0]["logprobs"] = reply.logprobs
            events.append(_sse(chunk))
        events += self._tool_call_events(cid, model, reply)
        events.append(_sse(_chunk(cid, model, {}, reply.finish_reason)))
        options = request.payload.get("stream_options") or {}
        if options.get("include_usage"):
            usage_chunk = _chunk(cid, model, {})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self._usage(request, reply.text)
            events.append(_sse(usage_chunk))
        events.append(b"data: [DONE]\n\n")
        return events


# --- wire helpers -------------------------------------------------------------------

_POST_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/generate")
_STREAM_PATHS = ("/v1/chat/completions", "/v1/completions")


def _hung_up(request: _Request, writer: asyncio.StreamWriter) -> bool:
    """Whether the client closed its side (end of its stream, or the socket gone)."""
    return writer.transport.is_closing() or (request.reader is not None and request.reader.at_eof())


def _error(message: str, type_: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": None}}


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def _sse(payload: dict[str, Any]) -> bytes:
    # ensure_ascii=False: raw multi-byte UTF-8 on the wire, as real servers send it.
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def _head(status: int, content_type: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _write(writer: asyncio.StreamWriter, data: bytes, wire_bytes: int | None = None) -> None:
    if not wire_bytes:
        writer.write(data)
        await writer.drain()
        return
    for i in range(0, len(data), wire_bytes):
        writer.write(data[i : i + wire_bytes])
        await writer.drain()
        await asyncio.sleep(0.001)  # separate TCP segments, so the reader sees the split


async def _send_raw(
    writer: asyncio.StreamWriter,
    status: int,
    content_type: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    wire_bytes: int | None = None,
) -> None:
    head = _head(status, content_type, {**(headers or {}), "Content-Length": str(len(body))})
    writer.write(head)
    await _write(writer, body, wire_bytes)


async def _send_json(
    writer: asyncio.StreamWriter, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    await _send_raw(
        writer, status, "application/json", json.dumps(payload, ensure_ascii=False).encode(), headers
    )


async def _start_stream(writer: asyncio.StreamWriter) -> None:
    writer.write(
        _head(200, "text/event-stream", {"Transfer-Encoding": "chunked", "Cache-Control": "no-cache"})
    )
    await writer.drain()


async def _send_chunk(writer: asyncio.StreamWriter, data: bytes, wire_bytes: int | None = None) -> None:
    """One HTTP/1.1 chunk (the empty one ends the body)."""
    await _write(writer, f"{len(data):x}\r\n".encode() + data + b"\r\n", wire_bytes)


__all__ = [
    "Behaviour",
    "Drop",
    "Fail",
    "FakeUpstream",
    "Hang",
    "Malformed",
    "Recorded",
    "Reply",
    "Reset",
]


def main() -> None:
    """Run the fake on its own (``python -m tests.fakes.upstream``): prints its port, answers
    every POST with the default :class:`Reply` until stdin closes. Benchmarks use this to
    keep the upstream out of the measuring process."""
    import sys

    with FakeUpstream() as upstream:
        print(upstream.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
