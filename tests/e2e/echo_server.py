"""TCP echo listeners in the "internet" namespace: the lockdown tests' connect targets.

Run by the harness::

    echo_server.py --listen 198.18.0.30:443 --listen 172.16.0.10:443 ... --ready-file READY

Every connection is served in its own thread and echoes what it receives until the peer
closes it, so a test can hold one open across a converge and see whether data still
flows. ``--udp ADDR:PORT`` echoes each datagram back. An IPv6 ADDR is written bare
(``2001:db8::10:443``, ``:::22``). READY is written once every listener is bound.
SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import signal
import socket
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


class Server6(Server):
    address_family = socket.AF_INET6


class EchoDatagram(socketserver.BaseRequestHandler):
    """Send a datagram back to where it came from."""

    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


class UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True


class UdpServer6(UdpServer):
    address_family = socket.AF_INET6


def make_server(spec: str, udp: bool) -> socketserver.BaseServer:
    addr, _, port = spec.rpartition(":")
    if udp:
        return (UdpServer6 if ":" in addr else UdpServer)((addr, int(port)), EchoDatagram)
    return (Server6 if ":" in addr else Server)((addr, int(port)), Echo)


def main(argv: list[str] | None = None) -> int:
    """Bind every ``--listen ADDR:PORT``, write the ready file, serve until signalled."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--udp", action="append", default=[])
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args(argv)
    servers = [*(make_server(spec, False) for spec in args.listen),
               *(make_server(spec, True) for spec in args.udp)]
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
