"""A tiny OTLP/HTTP receiver over TLS, standing in for the Grafana Cloud gateway.

Run inside the "internet" namespace by the harness::

    otlp_receiver.py --cert CHAIN.pem --key KEY.pem --auth-file AUTH --log REQUESTS.jsonl \
        --listen 198.18.0.10:443 --listen 198.18.0.10:8443 --listen 198.18.0.20:443 \
        --ready-file READY

Each request is answered (200 with an empty Export*ServiceResponse when the
``Authorization`` header equals the first line of AUTH, re-read on every request; 401
otherwise; 404 for an unknown path) and recorded as one JSON line in REQUESTS.jsonl: the
listener, method, path, headers, status, and the decoded protobuf body (resource
attributes, span names, metric names, log bodies). READY is written once every listener
is bound. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import signal
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from google.protobuf.json_format import Parse  # type: ignore[import-untyped,unused-ignore]
from google.protobuf.message import (  # type: ignore[import-untyped,unused-ignore]
    DecodeError,
    Message,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

SIGNALS: dict[str, tuple[type[Message], type[Message]]] = {
    "traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
}
MAX_BODY = 16 * 1024 * 1024


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as plain JSON-able Python."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    """A repeated ``KeyValue`` field as a dict."""
    return {kv.key: any_value(kv.value) for kv in kvs}


def resource_keys(resources: Any) -> list[list[str]]:
    """Each resource's attribute keys in wire order (a key sent twice shows twice)."""
    return [[kv.key for kv in r.resource.attributes] for r in resources]


def summarize_traces(req: Any) -> dict[str, Any]:
    """Resource attributes and span names of an ExportTraceServiceRequest."""
    return {
        "resource_keys": resource_keys(req.resource_spans),
        "resource_attributes": [attributes(rs.resource.attributes) for rs in req.resource_spans],
        "span_names": [s.name for rs in req.resource_spans for ss in rs.scope_spans
                       for s in ss.spans],
    }


def summarize_metrics(req: Any) -> dict[str, Any]:
    """Resource attributes and metric names of an ExportMetricsServiceRequest."""
    return {
        "resource_keys": resource_keys(req.resource_metrics),
        "resource_attributes": [attributes(rm.resource.attributes)
                                for rm in req.resource_metrics],
        "metric_names": [m.name for rm in req.resource_metrics for sm in rm.scope_metrics
                         for m in sm.metrics],
    }


def summarize_logs(req: Any) -> dict[str, Any]:
    """Resource attributes and log bodies of an ExportLogsServiceRequest."""
    return {
        "resource_keys": resource_keys(req.resource_logs),
        "resource_attributes": [attributes(rl.resource.attributes) for rl in req.resource_logs],
        "log_bodies": [any_value(r.body) for rl in req.resource_logs for sl in rl.scope_logs
                       for r in sl.log_records],
    }


SUMMARIZERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "traces": summarize_traces, "metrics": summarize_metrics, "logs": summarize_logs,
}


def signal_of(path: str) -> str | None:
    """``traces``/``metrics``/``logs`` when ``path`` ends in ``/v1/<signal>``."""
    for name in SIGNALS:
        if path.split("?", 1)[0].endswith(f"/v1/{name}"):
            return name
    return None


def decompress(body: bytes, encoding: str) -> bytes:
    """Undo a ``Content-Encoding`` of gzip or deflate."""
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def decode(kind: str, body: bytes, content_type: str) -> dict[str, Any]:
    """Decode an export request body (protobuf, or OTLP/JSON) into a summary."""
    message = SIGNALS[kind][0]()
    try:
        if "json" in content_type:
            Parse(body.decode(), message)
        else:
            message.ParseFromString(body)
    except (DecodeError, ValueError) as exc:
        return {"decode_error": str(exc)}
    return SUMMARIZERS[kind](message)


class Recorder:
    """Appends one JSON object per line to a file, thread-safely."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with self.lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)


class Handler(BaseHTTPRequestHandler):
    """Answers and records OTLP/HTTP export requests."""

    protocol_version = "HTTP/1.1"
    server: ReceiverServer

    def setup(self) -> None:
        """Do the TLS handshake here, in the request's own thread."""
        self.request.settimeout(30)
        self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def do_POST(self) -> None:
        """Handle an export request."""
        raw = self.read_body()
        kind = signal_of(self.path)
        status = self.status_for(kind)
        record: dict[str, Any] = {
            "time": time.time(), "listener": self.server.label, "method": "POST",
            "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
            "status": status, "signal": kind,
        }
        if kind is not None:
            try:
                body = decompress(raw, self.headers.get("Content-Encoding", ""))
                record["body_b64"] = base64.b64encode(body).decode()  # for marker searches
                record.update(decode(kind, body, self.headers.get("Content-Type", "")))
            except (OSError, zlib.error) as exc:
                record["decode_error"] = str(exc)
        self.server.recorder.write(record)
        self.reply(status, kind)

    def read_body(self) -> bytes:
        """The request body: Content-Length bytes, or the chunks of a chunked body (the
        Node.js SDK streams its exports that way); at most MAX_BODY bytes either way."""
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(min(int(self.headers.get("Content-Length") or 0), MAX_BODY))
        body = bytearray()
        while True:
            size = int(self.rfile.readline(100).split(b";")[0].strip() or b"0", 16)
            if size == 0 or len(body) + size > MAX_BODY:
                while self.rfile.readline(1000).strip():  # trailers, up to the blank line
                    pass
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline(10)  # the CRLF after each chunk

    def do_GET(self) -> None:
        """Record and answer a GET (404: the gateway only takes POSTs)."""
        self.server.recorder.write({
            "time": time.time(), "listener": self.server.label, "method": "GET",
            "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
            "status": 404, "signal": None,
        })
        self.reply(404, None)

    def status_for(self, kind: str | None) -> int:
        """401 without the expected Authorization (or none expected), 404 off the OTLP
        paths, else 200."""
        expected = self.server.expected_auth()
        if not expected or self.headers.get("Authorization") != expected:
            return 401
        return 404 if kind is None else 200

    def reply(self, status: int, kind: str | None) -> None:
        """Send ``status`` with an empty export response (protobuf) or a short text."""
        if status == 200 and kind is not None:
            body, ctype = SIGNALS[kind][1]().SerializeToString(), "application/x-protobuf"
        else:
            body, ctype = f"{status}\n".encode(), "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access log to stderr, prefixed with the listener."""
        sys.stderr.write(f"[{self.server.label}] {format % args}\n")


class ReceiverServer(ThreadingHTTPServer):
    """One TLS listener; the handshake is done per request thread, not in accept()."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], tls: ssl.SSLContext, recorder: Recorder,
                 auth_file: Path) -> None:
        self.tls, self.recorder, self.auth_file = tls, recorder, auth_file
        self.label = f"{addr[0]}:{addr[1]}"
        super().__init__(addr, Handler)

    def expected_auth(self) -> str:
        """The expected ``Authorization`` value (first line of the auth file)."""
        lines = self.auth_file.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line per failed connection (a bare TCP probe is normal, not a traceback)."""
        exc = sys.exc_info()[1]
        sys.stderr.write(f"[{self.label}] {client_address}: {type(exc).__name__}: {exc}\n")


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` as a tuple."""
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    """Bind every listener, write the ready file, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", type=Path, required=True, help="certificate chain PEM")
    parser.add_argument("--key", type=Path, required=True, help="private key PEM")
    parser.add_argument("--auth-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True, help="JSON-lines request log")
    parser.add_argument("--listen", action="append", type=parse_listen, required=True)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert, args.key)
    recorder = Recorder(args.log)
    servers = [ReceiverServer(addr, tls, recorder, args.auth_file) for addr in args.listen]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.ready_file:
        args.ready_file.write_text(" ".join(s.label for s in servers) + "\n")
    sys.stderr.write(f"listening on {', '.join(s.label for s in servers)}\n")
    stop.wait()
    for srv in servers:
        srv.shutdown()
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
