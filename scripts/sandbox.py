#!/usr/bin/env python3
"""Drive the end-to-end sandbox (tests/e2e/harness.py) from a shell script, e.g. the demo.

    eval "$(.venv/bin/python scripts/sandbox.py up --state-dir "$DIR" --auth-from-env)"
    trap '.venv/bin/python scripts/sandbox.py down --state-dir "$DIR"' EXIT
    scripts/sandbox.py exec --state-dir "$DIR" [--resolver local] -- CMD ARGS...
    scripts/sandbox.py coredns-start --state-dir "$DIR" --corefile F --pidfile P
    scripts/sandbox.py dns --state-dir "$DIR" NAME [--type A] [--server 127.0.0.53] [--tcp]
    scripts/sandbox.py set-hosts --state-dir "$DIR" NAME=ADDR NAME= ...   (NAME=: NXDOMAIN)
    scripts/sandbox.py queries --state-dir "$DIR"
    scripts/sandbox.py connect --state-dir "$DIR" ADDR PORT
    scripts/sandbox.py otel-client --state-dir "$DIR" --env-file F
    scripts/sandbox.py requests --state-dir "$DIR"
    scripts/sandbox.py down --state-dir "$DIR"

``up`` prints ``SANDBOX_*=value`` shell assignments (or JSON with ``--format json``) and
leaves the namespaces and servers running; ``down`` removes them (the state dir itself is
the caller's). Needs root. ``exec`` passes the caller's environment through and exits with
the command's status.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.harness import (  # noqa: E402
    LOCAL_DNS,
    Resolver,
    Sandbox,
    SandboxError,
    basic_auth,
    read_env_file,
)


def resolver_arg(text: str) -> Resolver:
    """``upstream``, ``local`` or ``none``."""
    if text == "none":
        return None
    if text in ("upstream", "local"):
        return "upstream" if text == "upstream" else "local"
    raise argparse.ArgumentTypeError("upstream, local or none")


def cmd_up(args: argparse.Namespace) -> int:
    """Bring the sandbox up and print where everything is."""
    auth = args.auth or ""
    if args.auth_from_env:
        auth = basic_auth(os.environ.get("GRAFANA_INSTANCE_ID", ""),
                          os.environ.get("GRAFANA_API_TOKEN", ""))
    box = Sandbox(args.state_dir, auth=auth, cleanup_at_exit=False)
    box.up()
    box.save()
    if args.format == "json":
        print(json.dumps(box.info.__dict__, indent=2, sort_keys=True))
    else:
        for key, value in box.info.shell_vars().items():
            print(f"{key}={shlex.quote(value)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Remove the sandbox (namespaces, processes)."""
    Sandbox.load(args.state_dir).down()
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    """Run a command in the container, output streamed, status passed on."""
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise SystemExit("exec: no command given (use -- CMD ARGS...)")
    box = Sandbox.load(args.state_dir)
    return subprocess.run(box.container_argv(argv, args.resolver), env=dict(os.environ),
                          check=False).returncode


def cmd_coredns_start(args: argparse.Namespace) -> int:
    """Start the container's CoreDNS (stays running after this command exits)."""
    box = Sandbox.load(args.state_dir)
    pid = box.start_container_coredns(args.corefile.resolve(), args.pidfile.resolve())
    box.save()
    print(pid)
    return 0


def cmd_coredns_stop(args: argparse.Namespace) -> int:
    """Stop the container's CoreDNS."""
    box = Sandbox.load(args.state_dir)
    box.stop_container_coredns()
    box.save()
    return 0


def cmd_dns(args: argparse.Namespace) -> int:
    """Print ``RCODE ANSWER...`` for a query made from inside the container."""
    reply = Sandbox.load(args.state_dir).dns_query(args.name, args.type, args.server,
                                                   transport="tcp" if args.tcp else "udp")
    print(" ".join([reply.rcode, *reply.answers, *([reply.error] if reply.error else [])]))
    return 0


def cmd_set_hosts(args: argparse.Namespace) -> int:
    """Change what the upstream DNS (8.8.8.8, 1.1.1.1) answers; wait until it is served."""
    changes: dict[str, str | None] = {}
    for item in args.changes:
        name, sep, addr = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"set-hosts: {item!r} is not NAME=ADDR (or NAME= for NXDOMAIN)")
        changes[name] = addr or None
    box = Sandbox.load(args.state_dir)
    box.set_hosts(changes)
    box.save()
    return 0


def cmd_queries(args: argparse.Namespace) -> int:
    """One line per (name, type): how many queries the upstream DNS has logged."""
    for (name, rdtype), count in sorted(Sandbox.load(args.state_dir).upstream_queries().items()):
        print(count, rdtype, name)
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    """Print the TCP connect outcome; exit 0 only when it connected."""
    result = Sandbox.load(args.state_dir).tcp_probe(args.addr, args.port, args.timeout)
    print(result)
    return 0 if result == "connected" else 1


def cmd_otel_client(args: argparse.Namespace) -> int:
    """Run the SDK client with only the env file's variables; pass its status on."""
    box = Sandbox.load(args.state_dir)
    proc = box.run_otel_client(read_env_file(args.env_file), resolver=args.resolver)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


def cmd_requests(args: argparse.Namespace) -> int:
    """One line per recorded request: status, path, and what it carried."""
    for rec in Sandbox.load(args.state_dir).requests():
        carried = rec.get("span_names") or rec.get("metric_names") or rec.get("log_bodies")
        attrs = (rec.get("resource_attributes") or [{}])[0]
        fly = {k: v for k, v in attrs.items() if not k.startswith(("telemetry.", "service."))}
        print(rec["status"], rec["method"], rec["path"], json.dumps(carried), json.dumps(fly))
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    subs = top.add_subparsers(dest="command", required=True)

    def sub(name: str, func: object, help_text: str) -> argparse.ArgumentParser:
        p = subs.add_parser(name, help=help_text)
        p.add_argument("--state-dir", type=Path, required=True)
        p.set_defaults(func=func)
        return p

    up = sub("up", cmd_up, "create the namespaces and start the internet's servers")
    up.add_argument("--auth", help="Authorization value the receiver accepts")
    up.add_argument("--auth-from-env", action="store_true",
                    help="accept Basic base64($GRAFANA_INSTANCE_ID:$GRAFANA_API_TOKEN)")
    up.add_argument("--format", choices=("shell", "json"), default="shell")
    sub("down", cmd_down, "kill everything and delete the namespaces")
    ex = sub("exec", cmd_exec, "run a command in the container")
    ex.add_argument("--resolver", type=resolver_arg, default="upstream")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    cs = sub("coredns-start", cmd_coredns_start, "start the container's CoreDNS")
    cs.add_argument("--corefile", type=Path, required=True)
    cs.add_argument("--pidfile", type=Path, required=True)
    sub("coredns-stop", cmd_coredns_stop, "stop the container's CoreDNS")
    dns = sub("dns", cmd_dns, "query DNS from the container")
    dns.add_argument("name")
    dns.add_argument("--type", default="A")
    dns.add_argument("--server", default=LOCAL_DNS)
    dns.add_argument("--tcp", action="store_true", help="query over TCP")
    hosts = sub("set-hosts", cmd_set_hosts, "change the upstream DNS's answers")
    hosts.add_argument("changes", nargs="+", metavar="NAME=ADDR")
    sub("queries", cmd_queries, "count the queries the upstream DNS got, per name")
    conn = sub("connect", cmd_connect, "TCP connect from the container")
    conn.add_argument("addr")
    conn.add_argument("port", type=int)
    conn.add_argument("--timeout", type=float, default=2.0)
    oc = sub("otel-client", cmd_otel_client, "run the OTel SDK client with an env file")
    oc.add_argument("--env-file", type=Path, required=True)
    oc.add_argument("--resolver", type=resolver_arg, default="local")
    sub("requests", cmd_requests, "list what the receiver got")
    return top


def main(argv: list[str] | None = None) -> int:
    """Parse and dispatch; harness errors become one line and exit 1."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SandboxError, FileNotFoundError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
