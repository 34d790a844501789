"""A stand-in for the Anthropic Messages API, so the real agent runs without the real API.

Run inside the container namespace on loopback (the firewall lets ``-o lo`` through)::

    messages_stub.py --listen 127.0.0.1:8089 --log REQUESTS.jsonl --ready-file READY

``POST /v1/messages`` answers one short assistant text turn (server-sent events when the
request asks for ``stream``, else one JSON message), or, when the user's prompt says
``statekit-read:PATH`` and the agent offers its Read tool, a call of Read on PATH (the
next turn, carrying the tool's result, gets the text); ``/v1/messages/count_tokens``
answers a count; anything else 404. Each request is recorded (path, model, whether it
streamed) as one JSON line. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPLY = "Hello from the statekit Messages API stub."
READ_MARKER = "statekit-read:"  # a prompt "... statekit-read:/some/file" asks for one Read


def blocks_of(message: Any) -> list[Any]:
    """A message's content as a list of blocks (a plain string is one text block)."""
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def read_request(body: dict[str, Any]) -> str | None:
    """The file to Read, when a user message asks for one, the agent offered a Read tool
    and no tool result came back yet (the turn after it gets plain text)."""
    messages = body.get("messages") or []
    tools = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
    blocks = [b for m in messages for b in blocks_of(m) if isinstance(b, dict)]
    if "Read" not in tools or any(b.get("type") == "tool_result" for b in blocks):
        return None
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            for block in blocks_of(message):
                text = str(block.get("text", "")) if isinstance(block, dict) else ""
                if READ_MARKER in text:
                    return text.split(READ_MARKER, 1)[1].split()[0]
    return None


def message(model: str) -> dict[str, Any]:
    return {"id": "msg_statekit_stub", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1}}


def events(model: str, read: str | None) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events of one turn: a Read tool call when ``read``, else text."""
    if read is None:
        block: dict[str, Any] = {"type": "text", "text": ""}
        delta: dict[str, Any] = {"type": "text_delta", "text": REPLY}
        stop = "end_turn"
    else:
        block = {"type": "tool_use", "id": "toolu_statekit_stub", "name": "Read", "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps({"file_path": read})}
        stop = "tool_use"
    return [
        ("message_start", {"type": "message_start", "message": message(model)}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": block}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StubServer

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), 32 * 1024 * 1024)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        path = self.path.split("?", 1)[0]
        model = str(body.get("model", "claude-stub"))
        stream = bool(body.get("stream"))
        read = read_request(body) if isinstance(body, dict) else None
        self.server.record({"path": path, "model": model, "stream": stream, "read": read})
        if path.endswith("/v1/messages/count_tokens"):
            self.send_json(200, {"input_tokens": 12})
        elif path.endswith("/v1/messages") and stream:
            self.send_events(model, read)
        elif path.endswith("/v1/messages"):
            full = message(model)
            full.update(content=[{"type": "text", "text": REPLY}], stop_reason="end_turn",
                        usage={"input_tokens": 12, "output_tokens": 9})
            self.send_json(200, full)
        else:
            self.send_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                            "message": path}})

    def do_GET(self) -> None:
        self.server.record({"path": self.path, "method": "GET"})
        self.send_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                        "message": self.path}})

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_events(self, model: str, read: str | None) -> None:
        data = "".join(f"event: {name}\ndata: {json.dumps(payload)}\n\n"
                       for name, payload in events(model, read)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"[messages-stub] {format % args}\n")


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], log: Path) -> None:
        self.log, self.lock = log, threading.Lock()
        super().__init__(addr, Handler)

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock, self.log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="ADDR:PORT")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = StubServer((host, int(port)), args.log)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.ready_file:
        args.ready_file.write_text(args.listen + "\n")
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
