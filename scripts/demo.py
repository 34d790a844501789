"""`make demo`: the container's boot with telemetry on, in a sandbox, for a person to watch.

Two private network namespaces ("internet": upstream DNS and an OTLP receiver over TLS;
"container": where statekit runs), a temporary --root, the shipped states, the example
entrypoint and launcher, a real CoreDNS and the real OpenTelemetry SDK. Everything is
removed at the end. Needs root (it creates network namespaces).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e import harness  # noqa: E402
from tests.e2e.harness import ALLOWED, ENDPOINT, GATEWAY, GATEWAY_ADDR, Sandbox  # noqa: E402

INSTANCE, TOKEN = "123456", "glc_demo-token-not-a-real-secret"
VARS = ["--var", f"upstream_resolvers=[{harness.UPSTREAM_DNS}]", "--var", f"domains=[{ALLOWED}]"]
ON = {"GRAFANA_INSTANCE_ID": INSTANCE, "GRAFANA_API_TOKEN": TOKEN,
      "GRAFANA_OTLP_ENDPOINT": ENDPOINT, "FLY_APP_NAME": "demo-app",
      "FLY_MACHINE_ID": "demo-machine"}


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}", flush=True)


def show(proc: object) -> None:
    show_text(getattr(proc, "stdout", "") + getattr(proc, "stderr", ""))


def show_text(out: str) -> None:
    assert TOKEN not in out, "the token must never be printed"
    print(out.rstrip("\n"), flush=True)


def write_hooks(box: Sandbox, root: Path) -> dict[str, str]:
    """The entrypoint's hooks: statekit with the sandbox's vars, and the network setup."""
    wrapper = box.workdir / "statekit"
    wrapper.write_text("#!/bin/sh\ncmd=$1; shift\n"
                       f"exec {sys.executable} -m statekit \"$cmd\" "
                       + " ".join(f"'{v}'" for v in VARS) + ' "$@"\n')
    start_dns = box.workdir / "start-dns"
    start_dns.write_text(
        "#!/bin/sh\n"
        f"{harness.COREDNS} -conf {root}/etc/coredns/Corefile -pidfile {root}/run/coredns.pid"
        f" > {box.workdir}/entrypoint-coredns.log 2>&1 &\n"
        f"i=0; while [ ! -s {root}/run/coredns.pid ] && [ $i -lt 100 ]; do sleep 0.1; "
        "i=$((i+1)); done; sleep 0.5\n"
        f"mount --bind {box.info.resolv['local']} /etc/resolv.conf\n"
        "echo \"network setup: CoreDNS started, resolv.conf -> 127.0.0.53\"\n")
    for path in (wrapper, start_dns):
        path.chmod(0o755)
    return {"STATEKIT": str(wrapper), "START_DNS": str(start_dns), "REFRESH": "0",
            "STATES": str(REPO / "states"), "STATEKIT_ROOT": str(root),
            "OTEL_EXPORTER_OTLP_CERTIFICATE": box.info.ca_pem}


def masked_env_file(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "OTEL_EXPORTER_OTLP_HEADERS":
            value = "Authorization=Basic <masked>"
        lines.append(f"    {key}={value}")
    return "\n".join(lines)


def demo(box: Sandbox) -> None:
    root = box.workdir / "root"
    root.mkdir()
    base = ["converge", "--root", str(root), *VARS]
    states = str(REPO / "states")
    print(f"sandbox: namespaces {box.internet} and {box.container}, --root {root}")

    step("1. dry run of both phases: statekit converge --check --diff (nothing changes)")
    show(box.statekit([*base, "--check", "--diff", states], env=ON))

    step("2. boot: examples/entrypoint.sh (phase network, CoreDNS starts, phase auth, "
         "then the launcher starts the 'agent': the real OpenTelemetry SDK)")
    box.set_expected_auth(harness.basic_auth(INSTANCE, TOKEN))
    entry = box.run_in_container(
        ["sh", str(REPO / "examples/entrypoint.sh"), sys.executable,
         str(REPO / "tests/e2e/otel_client.py")], env={**ON, **write_hooks(box, root)},
        timeout=180)
    show(entry)
    print(f"entrypoint exit code: {entry.returncode}")

    step("3. from the container: the gateway resolves and TCP 443 connects; the rest stays shut")
    print(f"    dig {GATEWAY} A    -> {box.dns_query(GATEWAY).answers}")
    print(f"    dig {GATEWAY} AAAA -> {box.dns_query(GATEWAY, 'AAAA').rcode}, empty")
    print(f"    connect {GATEWAY_ADDR}:443  -> {box.tcp_probe(GATEWAY_ADDR, 443)}")
    print(f"    connect {GATEWAY_ADDR}:8443 -> {box.tcp_probe(GATEWAY_ADDR, 8443)}")
    print(f"    dig {harness.OTHER} -> {box.dns_query(harness.OTHER).rcode}")

    step("4. what the receiver got from the agent's SDK")
    for req in box.requests():
        print(f"    {req['method']} {req['path']} -> {req['status']}, resource "
              f"{req['resource_attributes'][0] if req['resource_attributes'] else {}}")

    step("5. the env file (0600 root, in a 0700 directory; the header masked here)")
    env_file = root / "tmp/otel/otel-env"
    st, dst = env_file.stat(), env_file.parent.stat()
    print(f"    {env_file.relative_to(root)}: mode {st.st_mode & 0o777:04o} uid {st.st_uid}, "
          f"directory mode {dst.st_mode & 0o777:04o}")
    print(masked_env_file(env_file))

    step("6. the refresh loop's converge: idempotent (changed=0)")
    show(box.statekit([*base, states], env=ON, resolver="local"))

    step("7. why was this blocked? statekit drops, while the agent (uid 1000) connects "
         f"to {harness.NOT_ALLOWED_ADDR}:443, which is on no list")
    show_drop(box, root, states)

    step("8. credentials removed: the next converge takes it all back")
    show(box.statekit([*base, "--diff", states], env={}, resolver="local"))
    print(f"    dig {GATEWAY} -> {box.dns_query(GATEWAY).rcode}; connect "
          f"{GATEWAY_ADDR}:443 -> {box.tcp_probe(GATEWAY_ADDR, 443)}")

    step("9. statekit status: the last converge, the names and their pins, drift, CoreDNS")
    show(box.statekit(["status", "--root", str(root), *VARS, states], env={},
                      resolver="local"))


CONNECT = """import socket, sys
try:
    socket.create_connection((sys.argv[1], 443), timeout=2).close()
except OSError as exc:
    print(f"    the agent: connect {sys.argv[1]}:443 -> {type(exc).__name__}")
"""


def show_drop(box: Sandbox, root: Path, states: str) -> None:
    """``statekit drops --count 1`` in the container while the agent is blocked once."""
    import subprocess

    drops = subprocess.Popen(
        box.container_argv([sys.executable, "-m", "statekit", "drops", "--root", str(root),
                            *VARS, "--count", "1", "--timeout", "20", states], None),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert drops.stderr is not None
    print("    " + drops.stderr.readline().strip(), flush=True)  # reading NFLOG group ...
    agent = box.run_in_container(
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", sys.executable, "-I",
         "-c", CONNECT, harness.NOT_ALLOWED_ADDR], resolver=None)
    print(agent.stdout.rstrip("\n"), flush=True)
    out, err = drops.communicate(timeout=30)
    show_text(out + err)


def main() -> int:
    if os.geteuid() != 0:
        print("make demo creates network namespaces: run it as root (sudo make demo).",
              file=sys.stderr)
        return 1
    with Sandbox() as box:
        demo(box)
        step("10. teardown: namespaces, processes and files removed")
    print("done.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
