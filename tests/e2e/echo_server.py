"""TCP echo listeners in the "internet" namespace: the lockdown tests' connect targets.

Run by the harness::

    echo_server.py --listen 198.18.0.30:443 --listen 172.16.0.10:443 ... --ready-file READY

Every connection is served in its own thread and echoes what it receives until the peer
closes it, so a test can hold one open across a converge and see whether data still
flows. READY is written once every listener is bound. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import signal
import socketserver
import sys
import threading
from pathlib import Path


class Echo(socketserver.BaseRequestHandler):
    """Send back every byte until the peer closes."""

    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: list[str] | None = None) -> int:
    """Bind every ``--listen ADDR:PORT``, write the ready file, serve until signalled."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args(argv)
    servers = []
    for spec in args.listen:
        addr, _, port = spec.rpartition(":")
        servers.append(Server((addr, int(port)), Echo))
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    args.ready_file.write_text("ready\n")
    stop.wait()
    for server in servers:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
