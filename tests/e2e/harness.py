"""The end-to-end sandbox: an "internet" and a "container" network namespace, for real.

Used by the pytest fixtures (``tests/conftest.py``), by the lockdown tests
(``tests/e2e/lockdown.py``) and by ``scripts/sandbox.py``, the command line that
``make demo`` drives. Nothing here touches the host's own network namespace or its
``/etc``: both namespaces are created here (``ip netns add``) and always deleted by
:meth:`Sandbox.down` (also at interpreter exit), every process started in them is killed,
and a resolver is chosen per command by bind-mounting a temporary ``resolv.conf`` over
``/etc/resolv.conf`` inside a private mount namespace.

Layout (one veth pair, 198.18.0.0/24, the benchmarking range of RFC 2544; the container's
default route goes through it, so every address below is "the internet")::

    internet  198.18.0.1        the veth's far end, the container's default gateway
              8.8.8.8, 1.1.1.1  upstream DNS (real CoreDNS on its ``lo``): the ``hosts``
                                plugin on a file the test rewrites (:meth:`Sandbox.set_hosts`),
                                ``log`` on, so queries can be counted per name
              9.9.9.9           a hostile upstream DNS on its ``lo``, when a test starts it
                                (:meth:`Sandbox.start_hostile_dns`, tests/e2e/hostile_dns.py)
              198.18.0.10       OTLP/HTTP receiver over TLS on :443 (and :8443, to stay blocked)
              198.18.0.20       the same receiver on :443 (the "other" name, to stay blocked)
              198.18.0.30-34    TCP echo on :443: a/b/c.allowed.test (.30-.32), spares .33, .34
              198.18.0.40       TCP echo on :443, on no allowlist
              169.254.169.254   TCP echo on :443 (the metadata service)
              172.16.0.10       TCP echo on :443 (private space)
    container 198.18.0.2        default route via 198.18.0.1; its own CoreDNS on 127.0.0.53

IPv6 on the same veth (no DAD, so usable at once), for the IPv6 lockdown::

    internet  fdaa::1           the container's IPv6 gateway, and a client in fdaa::/16
                                (Fly's 6PN range, where SSH replies may go)
              2001:db8::10      a documentation address: TCP and UDP echo on :443
    container fdaa::2           default IPv6 route via fdaa::1; ping sockets allowed to
                                every group (an unprivileged ICMPv6 echo needs one)
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from secrets import token_hex
from typing import Any, Literal

import trustme

REPO = Path(__file__).resolve().parents[2]
E2E = Path(__file__).resolve().parent
COREDNS = REPO / ".tools" / "bin" / "coredns"
# The real agent, as `make claude-code` installs it (npm ci; its wrapper runs the native
# binary of this platform).
CLAUDE_CODE = E2E / "claude" / "node_modules" / "@anthropic-ai" / "claude-code" / "cli-wrapper.cjs"

GATEWAY = "otlp-gateway-prod-us-west-2.grafana.net"
OTHER = "other.example.net"
ENDPOINT = f"https://{GATEWAY}/otlp"
ROUTER = "198.18.0.1"  # the internet's end of the veth: the container's default gateway
UPSTREAM_RESOLVERS = ("8.8.8.8", "1.1.1.1")
UPSTREAM_DNS = UPSTREAM_RESOLVERS[0]
HOSTILE_DNS = "9.9.9.9"  # tests/e2e/hostile_dns.py, started by the tests that use it
GATEWAY_ADDR = "198.18.0.10"
OTHER_ADDR = "198.18.0.20"
CONTAINER_ADDR = "198.18.0.2"
ROUTER6 = "fdaa::1"  # the internet's end of the veth, in fdaa::/16
CONTAINER_ADDR6 = "fdaa::2"
OUTSIDE_ADDR6 = "2001:db8::10"  # TCP and UDP echo on ECHO_PORT
AGENT_UID = 1000  # the agent's user in the container
LOCAL_DNS = "127.0.0.53"
OTLP_PORT = 443
OTHER_PORT = 8443
ECHO_PORT = 443
ALLOWED_HOSTS: dict[str, str] = {  # the allowlist the lockdown tests use
    "a.allowed.test": "198.18.0.30", "b.allowed.test": "198.18.0.31",
    "c.allowed.test": "198.18.0.32"}
ALLOWED = "a.allowed.test"  # the one name the telemetry tests put on the allowlist
ALLOWED_ADDR = ALLOWED_HOSTS[ALLOWED]
SPARE_ADDRS = ("198.18.0.33", "198.18.0.34")  # echo listeners for a name that moves
NOT_ALLOWED_ADDR = "198.18.0.40"
METADATA_ADDR = "169.254.169.254"
PRIVATE_ADDR = "172.16.0.10"
HOSTS: dict[str, str] = {GATEWAY: GATEWAY_ADDR, OTHER: OTHER_ADDR, **ALLOWED_HOSTS}
LISTENERS: tuple[tuple[str, int], ...] = (
    (GATEWAY_ADDR, OTLP_PORT), (GATEWAY_ADDR, OTHER_PORT), (OTHER_ADDR, OTLP_PORT))
MESSAGES_STUB_PORT = 8089
ECHO_ADDRS: tuple[str, ...] = (*ALLOWED_HOSTS.values(), *SPARE_ADDRS, NOT_ALLOWED_ADDR,
                               METADATA_ADDR, PRIVATE_ADDR)
MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STATE_FILE = "sandbox.json"

Resolver = Literal["upstream", "local"] | None

DNS_PROBE = str(E2E / "dns_probe.py")  # stdlib only: a probe costs a start-up, no more
# The interpreter of the stdlib-only probes: isolated, and no site (its .pth files and
# site-packages are ~5 ms of each of the suite's hundreds of probes).
PROBE_PYTHON = [sys.executable, "-I", "-S"]

TCP_PROBE = """\
import errno, socket, sys
addr, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    socket.create_connection((addr, port), timeout=timeout).close()
    print("connected")
except TimeoutError:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print(errno.errorcode.get(exc.errno or 0, str(exc)))
"""

NET_PROBE = """\
import errno, socket, sys
proto, addr, port, timeout, source, source_port = sys.argv[1:7]
def say(word):
    print(word)
    sys.exit(0)
try:
    family, kind, _, _, where = socket.getaddrinfo(
        addr, int(port), type=socket.SOCK_DGRAM if proto != "tcp" else socket.SOCK_STREAM)[0]
except socket.gaierror:
    say("unresolved")
icmp = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
sock = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM,
                     icmp if proto == "icmp" else 0)
sock.settimeout(float(timeout))
try:
    if source or int(source_port):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((source, int(source_port)))
    if proto == "tcp":
        sock.connect(where)
        sock.sendall(b"ping")
        say("answer" if sock.recv(4) == b"ping" else "closed")
    request = bytes([128 if family == socket.AF_INET6 else 8, 0, 0, 0, 0, 0, 0, 1]) + b"ping"
    sock.sendto(request if proto == "icmp" else b"ping", where)
    data = sock.recv(64)
    if proto == "icmp":
        say("answer" if data[:1] == bytes([129 if family == socket.AF_INET6 else 0]) else "other")
    say("answer" if data == b"ping" else "other")
except TimeoutError:
    say("timeout")
except OSError as exc:
    say(errno.errorcode.get(exc.errno or 0, str(exc)))
"""

HTTPS_POST = """\
import json, ssl, sys, urllib.error, urllib.request
url, cafile, headers, timeout = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
body = sys.stdin.buffer.read()
ctx = ssl.create_default_context(cafile=cafile)
req = urllib.request.Request(url, data=body, headers=headers, method="POST")
try:
    with urllib.request.urlopen(req, context=ctx, timeout=float(timeout)) as resp:
        print(resp.status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except OSError as exc:
    print(0)
    print(exc, file=sys.stderr)
"""

HOLD_CLIENT = """\
import errno, socket, sys
addr, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def say(word):
    sys.stdout.write(word + "\\n")
    sys.stdout.flush()
try:
    sock = socket.create_connection((addr, port), timeout=timeout)
except TimeoutError:
    say("timeout")
    sys.exit(0)
except OSError as exc:
    say(errno.errorcode.get(exc.errno or 0, str(exc)))
    sys.exit(0)
say("connected")
for line in sys.stdin:
    data = line.strip().encode()
    try:
        sock.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = sock.recv(len(data) - len(got))
            if not chunk:
                break
            got += chunk
        say("echo" if got == data else "closed" if not got else "garbled")
    except TimeoutError:
        say("timeout")
    except OSError as exc:
        say(errno.errorcode.get(exc.errno or 0, str(exc)))
"""

MOUNT_RESOLV = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'


class SandboxError(RuntimeError):
    """The sandbox could not be built or a helper failed."""


@dataclass
class DnsAnswer:
    """One DNS reply seen from inside the container.

    ``rcode`` is the reply's rcode text (``NOERROR``, ``NXDOMAIN``, ...), ``TIMEOUT`` when
    nothing answered, or ``ERROR`` when the query could not be sent (``error`` says why,
    e.g. ``[Errno 1] Operation not permitted`` when the container's OUTPUT chain drops
    the UDP datagram).
    """

    rcode: str
    answers: list[str]
    error: str = ""


@dataclass
class SandboxInfo:
    """Everything needed to find a running sandbox again (saved as ``sandbox.json``)."""

    run_id: str
    internet: str
    container: str
    veth_internet: str
    veth_container: str
    workdir: str
    ca_pem: str
    requests_log: str
    auth_file: str
    resolv: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    endpoint: str = ENDPOINT
    upstream_dns: str = UPSTREAM_DNS
    upstream_resolvers: list[str] = field(default_factory=lambda: list(UPSTREAM_RESOLVERS))
    hosts_file: str = ""
    local_dns: str = LOCAL_DNS
    container_coredns_pidfile: str = ""

    def shell_vars(self) -> dict[str, str]:
        """The info as ``SANDBOX_*`` shell variables (for ``eval`` in a demo script)."""
        flat = {k: v for k, v in asdict(self).items() if isinstance(v, str)}
        flat.update({f"resolv_{kind}": path for kind, path in self.resolv.items()})
        return {f"SANDBOX_{k.upper()}": v for k, v in flat.items()}


def basic_auth(instance_id: str, token: str) -> str:
    """The ``Authorization`` value Grafana Cloud expects: ``Basic base64(id:token)``."""
    return "Basic " + base64.b64encode(f"{instance_id}:{token}".encode()).decode()


def read_env_file(path: Path) -> dict[str, str]:
    """Read a ``KEY=value`` file the way the launcher does (split at the first ``=``)."""
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value
    return env


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               detail: Callable[[], str] = lambda: "") -> None:
    """Poll ``check`` until true; raise :class:`SandboxError` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail()}")
        time.sleep(0.1)


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0,
        **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` with text output captured; errors carry stderr."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          check=False, **kwargs)
    if check and proc.returncode != 0:
        raise SandboxError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def which(tool: str) -> str:
    """Absolute path of ``tool`` (also looked up in the sbin directories)."""
    found = shutil.which(tool, path=f"{os.environ.get('PATH', '')}:{MINIMAL_PATH}")
    if not found:
        raise SandboxError(f"{tool} not found; run `make deps`")
    return found


def netns_pids(name: str) -> list[int]:
    """PIDs of the processes inside network namespace ``name``."""
    out = run(["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def kill_netns_processes(name: str, grace: float = 2.0) -> None:
    """SIGTERM every process inside ``name``, then SIGKILL what is left after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = netns_pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not pids:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and netns_pids(name):
            time.sleep(0.05)


def netns_exists(name: str) -> bool:
    """Whether ``ip netns`` knows a namespace called ``name``."""
    listing = run(["ip", "netns", "list"], check=False).stdout
    return any(line.split()[0] == name for line in listing.splitlines() if line.strip())


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit (so ``finally`` and atexit clean up), unless the
    process already handles SIGTERM or this is not the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, raise_system_exit)


def raise_system_exit(signum: int, frame: object) -> None:
    """Signal handler: exit with 128 + the signal number."""
    raise SystemExit(128 + signum)


def upstream_corefile(hosts_file: Path, zone_file: Path, binds: Sequence[str]) -> str:
    """The internet's DNS: ``hosts`` answers A from ``hosts_file`` (AAAA empty), re-read
    every 200 ms; every other name falls through to an empty root zone (``zone_file``):
    NXDOMAIN, negative TTL 1 s. Each query is logged (``log``).

    The negative TTL is the SOA record's own TTL in :data:`ROOT_ZONE`, not its MINIMUM
    field: the ``file`` plugin sends the SOA with its zone TTL in an NXDOMAIN, and a
    CoreDNS ``cache`` (the container's) keeps the answer for the lowest TTL in it,
    MINIMUM unread. With a 60 s SOA TTL the container's CoreDNS kept a name's NXDOMAIN
    for 60 s after the name came back (docs/failure-model.md, "A name that does not
    resolve")."""
    return (f".:53 {{\n    bind {' '.join(binds)}\n    hosts {hosts_file} {{\n"
            f"        ttl 1\n        reload 200ms\n        no_reverse\n"
            f"        fallthrough\n    }}\n    file {zone_file} .\n"
            f"    log\n    errors\n}}\n")


ROOT_ZONE = """\
$ORIGIN .
@ 1 IN SOA ns.upstream.test. hostmaster.upstream.test. 1 7200 3600 1209600 1
@ 60 IN NS ns.upstream.test.
"""


def hosts_text(hosts: Mapping[str, str]) -> str:
    """``/etc/hosts`` lines for ``hosts`` (name -> IPv4 address)."""
    return "".join(f"{addr} {name}\n" for name, addr in sorted(hosts.items()))


QUERY_LOG = re.compile(r'"(?P<type>[A-Z0-9]+) IN (?P<name>\S+?)\.? (?:udp|tcp) ')


def count_queries(log: str) -> Counter[tuple[str, str]]:
    """``(name, type)`` -> how many queries a CoreDNS ``log`` output shows."""
    return Counter((m["name"].lower(), m["type"]) for m in QUERY_LOG.finditer(log))


class Sandbox:
    """Two network namespaces joined by a veth pair, with the internet's servers running.

    Use as a context manager, or call :meth:`up` and :meth:`down` (idempotent; also run at
    interpreter exit unless ``cleanup_at_exit`` is false, which the CLI uses to keep the
    sandbox between invocations).
    """

    def __init__(self, workdir: Path | None = None, *, auth: str = "",
                 cleanup_at_exit: bool = True) -> None:
        """Prepare (not start) a sandbox; ``auth`` is the receiver's expected header."""
        run_id = token_hex(4)
        self.owns_workdir = workdir is None
        wd = Path(tempfile.mkdtemp(prefix="statekit-e2e-")) if workdir is None else workdir
        wd.mkdir(parents=True, exist_ok=True)
        self.info = SandboxInfo(
            run_id=run_id, internet=f"ske-{run_id}-inet", container=f"ske-{run_id}-ctr",
            veth_internet=f"ske{run_id}i", veth_container=f"ske{run_id}c",
            workdir=str(wd), ca_pem=str(wd / "ca.pem"), requests_log=str(wd / "requests.jsonl"),
            auth_file=str(wd / "expected-auth"), hosts=dict(HOSTS),
            hosts_file=str(wd / "upstream.hosts"),
            resolv={"upstream": str(wd / "resolv.upstream.conf"),
                    "local": str(wd / "resolv.local.conf")})
        self.initial_auth = auth
        self.cleanup_at_exit = cleanup_at_exit
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.created: list[str] = []
        self.is_down = False

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    @property
    def workdir(self) -> Path:
        """The sandbox's own directory (certificates, logs, resolv.conf files)."""
        return Path(self.info.workdir)

    @property
    def internet(self) -> str:
        """Name of the "internet" network namespace."""
        return self.info.internet

    @property
    def container(self) -> str:
        """Name of the "container" network namespace."""
        return self.info.container

    @property
    def ca_pem(self) -> Path:
        """The test CA (PEM) that signed the receiver's certificate."""
        return Path(self.info.ca_pem)

    def up(self) -> Sandbox:
        """Create namespaces, link, certificates, upstream DNS and receiver; wait for them.

        On any failure (including KeyboardInterrupt) everything created is removed again.
        """
        if self.cleanup_at_exit:
            atexit.register(self.down)
            exit_on_sigterm()
        try:
            self.write_files()
            self.create_network()
            self.start_upstream_dns()
            self.start_receiver()
            self.start_echo()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Kill every process in both namespaces, delete them and (if ours) the workdir."""
        if self.is_down:
            return
        self.is_down = True
        atexit.unregister(self.down)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for name in (self.container, self.internet):
            if netns_exists(name):
                kill_netns_processes(name)
                run(["ip", "netns", "del", name], check=False)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        (self.workdir / STATE_FILE).unlink(missing_ok=True)
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def save(self) -> Path:
        """Write ``sandbox.json`` into the workdir, for :meth:`load` in another process."""
        path = self.workdir / STATE_FILE
        path.write_text(json.dumps(asdict(self.info), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, workdir: Path) -> Sandbox:
        """A handle on a sandbox that another process brought up in ``workdir``."""
        data = json.loads((workdir / STATE_FILE).read_text())
        box = cls(workdir, cleanup_at_exit=False)
        box.info = SandboxInfo(**data)
        return box

    # --- building -----------------------------------------------------------------------

    def write_files(self) -> None:
        """Certificates (trustme CA), the auth file, the resolv.conf files, the Corefile."""
        ca = trustme.CA()
        cert = ca.issue_cert(*self.info.hosts, *self.info.hosts.values())
        ca.cert_pem.write_to_path(self.info.ca_pem)
        chain = self.workdir / "receiver-chain.pem"
        chain.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(self.workdir / "receiver-key.pem"))
        self.set_expected_auth(self.initial_auth)
        Path(self.info.requests_log).touch()
        for kind, servers in (("upstream", self.info.upstream_resolvers),
                              ("local", [LOCAL_DNS])):
            Path(self.info.resolv[kind]).write_text(
                "".join(f"nameserver {server}\n" for server in servers)
                + "options timeout:1 attempts:2\n")
        Path(self.info.hosts_file).write_text(hosts_text(self.info.hosts))
        zone_file = self.workdir / "upstream.root.zone"
        zone_file.write_text(ROOT_ZONE)
        (self.workdir / "upstream.Corefile").write_text(upstream_corefile(
            Path(self.info.hosts_file), zone_file, self.info.upstream_resolvers))

    def create_network(self) -> None:
        """Both namespaces, loopback up, the veth pair and its addresses, a default route."""
        inet, ctr = self.internet, self.container
        vi, vc = self.info.veth_internet, self.info.veth_container
        for name in (inet, ctr):
            run(["ip", "netns", "add", name])
            self.created.append(name)
            run(["ip", "-n", name, "link", "set", "lo", "up"])
        run(["ip", "-n", inet, "link", "add", vi, "type", "veth", "peer", "name", vc,
             "netns", ctr])
        run(["ip", "-n", inet, "addr", "add", f"{ROUTER}/24", "dev", vi])
        for addr in sorted({*HOSTS.values(), *ECHO_ADDRS}):
            run(["ip", "-n", inet, "addr", "add", f"{addr}/32", "dev", vi])
        for addr in (*self.info.upstream_resolvers, HOSTILE_DNS):
            run(["ip", "-n", inet, "addr", "add", f"{addr}/32", "dev", "lo"])
        run(["ip", "-n", ctr, "addr", "add", f"{CONTAINER_ADDR}/24", "dev", vc])
        for ns, dev, addr in ((inet, vi, f"{ROUTER6}/64"), (inet, vi, f"{OUTSIDE_ADDR6}/128"),
                              (ctr, vc, f"{CONTAINER_ADDR6}/64")):
            run(["ip", "-n", ns, "addr", "add", addr, "dev", dev, "nodad"])
        run(["ip", "-n", inet, "link", "set", vi, "up"])
        run(["ip", "-n", ctr, "link", "set", vc, "up"])
        run(["ip", "-n", ctr, "route", "add", "default", "via", ROUTER])
        run(["ip", "-n", ctr, "-6", "route", "add", "default", "via", ROUTER6])
        run(["ip", "netns", "exec", ctr, "sysctl", "-qw",
             "net.ipv4.ping_group_range=0 2147483647"])

    def spawn(self, label: str, netns: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start a long-running ``argv`` in ``netns``, output to ``<workdir>/<label>.log``."""
        with (self.workdir / f"{label}.log").open("ab") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        self.procs[label] = proc
        return proc

    def log(self, label: str) -> str:
        """The output so far of the process started as ``label``."""
        path = self.workdir / f"{label}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive_or_raise(self, label: str) -> None:
        """Raise with the process's log if ``label`` has exited."""
        proc = self.procs.get(label)
        if proc is not None and proc.poll() is not None:
            raise SandboxError(f"{label} exited {proc.returncode}:\n{self.log(label)}")

    def start_upstream_dns(self, timeout: float = 15.0) -> None:
        """The internet's CoreDNS on 8.8.8.8:53 and 1.1.1.1:53; wait until both answer
        the gateway, as seen from the container."""
        self.spawn("upstream-coredns", self.internet,
                   [str(COREDNS), "-conf", str(self.workdir / "upstream.Corefile")])
        gateway, addr = GATEWAY, self.info.hosts[GATEWAY]

        def ready() -> bool:
            self.alive_or_raise("upstream-coredns")
            return all(self.dns_query(gateway, server=server, timeout=0.5).answers == [addr]
                       for server in self.info.upstream_resolvers)

        wait_until(ready, timeout, "the upstream DNS", lambda: self.log("upstream-coredns"))

    def start_echo(self, timeout: float = 15.0) -> None:
        """TCP echo on :443 of every address in ``ECHO_ADDRS``; wait until each accepts."""
        ready_file = self.workdir / "echo.ready"
        argv = [sys.executable, "-I", str(E2E / "echo_server.py"), "--ready-file",
                str(ready_file)]
        for addr in (*ECHO_ADDRS, OUTSIDE_ADDR6):
            argv += ["--listen", f"{addr}:{ECHO_PORT}"]
        argv += ["--udp", f"{OUTSIDE_ADDR6}:{ECHO_PORT}"]
        self.spawn("echo", self.internet, argv)

        def ready() -> bool:
            self.alive_or_raise("echo")
            return ready_file.exists()

        wait_until(ready, timeout, "the echo listeners", lambda: self.log("echo"))

    def start_receiver(self, timeout: float = 15.0) -> None:
        """The OTLP receiver on every listener; wait until each accepts a connection."""
        ready_file = self.workdir / "receiver.ready"
        argv = [sys.executable, str(E2E / "otlp_receiver.py"),
                "--cert", str(self.workdir / "receiver-chain.pem"),
                "--key", str(self.workdir / "receiver-key.pem"),
                "--auth-file", self.info.auth_file, "--log", self.info.requests_log,
                "--ready-file", str(ready_file)]
        for addr, port in LISTENERS:
            argv += ["--listen", f"{addr}:{port}"]
        self.spawn("receiver", self.internet, argv)

        def ready() -> bool:
            self.alive_or_raise("receiver")
            return ready_file.exists() and all(self.tcp_connect(a, p, 1.0) for a, p in LISTENERS)

        wait_until(ready, timeout, "the OTLP receiver", lambda: self.log("receiver"))

    def start_container_server(self, port: int = 22, timeout: float = 15.0) -> None:
        """A TCP echo on the container's ``[::]:port``: an SSH-like server, which answers
        whoever connects (the container's firewall decides whether its replies leave).
        Stopped by :meth:`reset_container` like every process in the container."""
        label = f"container-server-{port}"
        ready_file = self.workdir / f"{label}.ready"
        ready_file.unlink(missing_ok=True)
        self.spawn(label, self.container, [sys.executable, "-I", str(E2E / "echo_server.py"),
                                           "--listen", f":::{port}", "--ready-file",
                                           str(ready_file)])

        def ready() -> bool:
            self.alive_or_raise(label)
            return ready_file.exists()

        wait_until(ready, timeout, f"the container's server on port {port}",
                   lambda: self.log(label))

    def start_hostile_dns(self, answers: Mapping[str, str], *, truncated: Sequence[str] = (),
                          cnames: Sequence[str] = (), delay: float = 0.0,
                          timeout: float = 15.0) -> None:
        """The hostile upstream DNS (tests/e2e/hostile_dns.py) on ``HOSTILE_DNS``:53 (one
        at a time; a new one replaces the last). It answers the ``answers`` names with
        their address, the ``truncated`` ones with an A record cut short, the ``cnames``
        ones with 4 KB of CNAMEs, every other name NXDOMAIN; the healthy answers ``delay``
        seconds later than the hostile ones. Returns once the container gets an answer
        from it."""
        self.stop_hostile_dns()
        ready_file = self.workdir / "hostile-dns.ready"
        ready_file.unlink(missing_ok=True)
        argv = [sys.executable, "-I", str(E2E / "hostile_dns.py"), "--listen",
                f"{HOSTILE_DNS}:53", "--ready-file", str(ready_file), "--delay", str(delay)]
        argv += [f"--answer={name}={addr}" for name, addr in answers.items()]
        argv += [f"--truncated={name}" for name in truncated]
        argv += [f"--cnames={name}" for name in cnames]
        self.spawn("hostile-dns", self.internet, argv)
        probe = next(iter(answers))

        def ready() -> bool:
            self.alive_or_raise("hostile-dns")
            return ready_file.exists() and self.dns_query(
                probe, server=HOSTILE_DNS, timeout=0.5 + delay).answers == [answers[probe]]

        wait_until(ready, timeout, "the hostile DNS", lambda: self.log("hostile-dns"))

    def stop_hostile_dns(self) -> None:
        """Stop the hostile upstream DNS, if one runs."""
        proc = self.procs.pop("hostile-dns", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=5)

    def start_messages_stub(self, port: int = MESSAGES_STUB_PORT, timeout: float = 15.0) -> Path:
        """The Messages API stub on the container's loopback (the firewall lets ``lo``
        through); its request log. For the real agent: ``ANTHROPIC_BASE_URL`` =
        ``http://127.0.0.1:<port>``."""
        ready_file, log = self.workdir / "messages-stub.ready", self.workdir / "messages.jsonl"
        old = self.procs.pop("messages-stub", None)  # one stub at a time (a reused sandbox)
        if old is not None and old.poll() is None:
            old.terminate()
            old.wait(timeout=5)
        ready_file.unlink(missing_ok=True)
        log.write_text("")
        self.spawn("messages-stub", self.container,
                   [sys.executable, str(E2E / "messages_stub.py"), "--listen",
                    f"127.0.0.1:{port}", "--log", str(log), "--ready-file", str(ready_file)])

        def ready() -> bool:
            self.alive_or_raise("messages-stub")
            return ready_file.exists()

        wait_until(ready, timeout, "the Messages API stub", lambda: self.log("messages-stub"))
        return log

    # --- running things in the container ------------------------------------------------

    def container_argv(self, argv: Sequence[str], resolver: Resolver,
                       user: int | None = None) -> list[str]:
        """``argv`` wrapped to run in the container, with ``resolver``'s resolv.conf, as
        ``user`` (a uid, its own group, no other groups) if given."""
        wrapped = ["ip", "netns", "exec", self.container]
        if user is not None:
            argv = [which("setpriv"), f"--reuid={user}", f"--regid={user}",
                    "--clear-groups", *argv]
        if resolver is None:
            return [*wrapped, *argv]
        return [*wrapped, which("unshare"), "--mount", "--propagation", "private",
                which("sh"), "-c", MOUNT_RESOLV, self.info.resolv[resolver], *argv]

    def run_in_container(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                         resolver: Resolver = "upstream", timeout: float = 60.0,
                         input: str | None = None, cwd: Path | None = None,
                         base_env: bool = True,
                         user: int | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the container namespace; never raises on a non-zero exit.

        ``resolver``: ``"upstream"`` (8.8.8.8, 1.1.1.1), ``"local"`` (127.0.0.53, the
        container's CoreDNS) or None (leave /etc/resolv.conf alone). The environment is
        ``env`` on top of PATH and LANG (or ``env`` alone when ``base_env`` is false).
        ``user``: run as that uid (root by default).
        """
        full_env = {"PATH": os.environ.get("PATH", MINIMAL_PATH), "LANG": "C.UTF-8"} \
            if base_env else {}
        full_env.update(env or {})
        return subprocess.run(self.container_argv(argv, resolver, user), capture_output=True,
                              text=True, env=full_env, timeout=timeout, input=input,
                              cwd=cwd, check=False)

    def run_in_internet(self, argv: Sequence[str], *,
                        timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the internet namespace (for inspection); never raises."""
        return run(["ip", "netns", "exec", self.internet, *argv], check=False,
                   timeout=timeout)

    def statekit(self, args: Sequence[str], *, env: Mapping[str, str] | None = None,
                 resolver: Resolver = "upstream",
                 timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``python -m statekit ARGS`` in the container (cwd: the repository)."""
        return self.run_in_container([sys.executable, "-m", "statekit", *args], env=env,
                                     resolver=resolver, timeout=timeout, cwd=REPO)

    def dns_query(self, name: str, rdtype: str = "A", server: str = LOCAL_DNS, *,
                  port: int = 53, timeout: float = 2.0,
                  transport: Literal["udp", "tcp"] = "udp", user: int | None = None,
                  source_port: int = 0) -> DnsAnswer:
        """Ask ``server`` for ``name``/``rdtype`` from inside the container (dns_probe.py),
        over UDP or TCP, as ``user`` (root by default), from ``source_port`` if given."""
        proc = self.run_in_container(
            [*PROBE_PYTHON, DNS_PROBE, "ask", name, rdtype, server, str(port),
             str(timeout), transport, str(source_port)], resolver=None,
            timeout=timeout + 30, user=user)
        if proc.returncode != 0:
            raise SandboxError(f"dns probe failed: {proc.stderr.strip()}")
        return DnsAnswer(**json.loads(proc.stdout))

    def upstream_answer(self, name: str, server: str = UPSTREAM_DNS,
                        timeout: float = 1.0) -> DnsAnswer:
        """What the upstream DNS answers for ``name``/A, asked from inside the internet
        (no container firewall in the way; for the harness's own checks)."""
        proc = run(["ip", "netns", "exec", self.internet, *PROBE_PYTHON, DNS_PROBE, "ask",
                    name, "A", server, "53", str(timeout), "udp", "0"],
                   timeout=timeout + 30)
        return DnsAnswer(**json.loads(proc.stdout))

    def tcp_probe(self, addr: str, port: int, timeout: float = 2.0) -> str:
        """A TCP connect from the container: ``connected``, ``refused``, ``timeout`` (also
        what a DROP in the container's OUTPUT chain gives: TCP retries the SYN), or an
        errno name such as ``ENETUNREACH``."""
        proc = self.run_in_container(
            [*PROBE_PYTHON, "-c", TCP_PROBE, addr, str(port), str(timeout)],
            resolver=None, timeout=timeout + 30)
        if proc.returncode != 0:
            raise SandboxError(f"tcp probe failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def probe(self, proto: Literal["tcp", "udp", "icmp"], addr: str, port: int = ECHO_PORT,
              *, user: int | None = None, source: str = "", source_port: int = 0,
              timeout: float = 1.0, resolver: Resolver = None,
              where: Literal["container", "internet"] = "container") -> str:
        """Send ``ping`` from inside the container (or the internet) to an echo listener
        (ICMP: an echo request): ``answer`` when it came back, ``timeout`` when nothing
        did, an errno name (``EPERM``: the OUTPUT chain dropped it), ``unresolved`` for
        a name that did not resolve. As ``user`` (root by default), from ``source``
        and ``source_port`` when given (``addr`` may be a name: ``resolver``)."""
        argv = [*PROBE_PYTHON, "-c", NET_PROBE, proto, addr, str(port), str(timeout),
                source, str(source_port)]
        if where == "internet":
            proc = self.run_in_internet(argv, timeout=timeout + 30)
        else:
            proc = self.run_in_container(argv, resolver=resolver, timeout=timeout + 30,
                                         user=user)
        if proc.returncode != 0:
            raise SandboxError(f"probe failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def tcp_connect(self, addr: str, port: int, timeout: float = 2.0) -> bool:
        """Whether a TCP connect from the container to ``addr:port`` succeeds."""
        return self.tcp_probe(addr, port, timeout) == "connected"

    def https_post(self, url: str, *, headers: Mapping[str, str] | None = None,
                   body: bytes = b"", resolver: Resolver = "upstream",
                   timeout: float = 10.0) -> int:
        """POST from the container trusting the test CA; the HTTP status (0: no reply)."""
        proc = subprocess.run(
            self.container_argv([sys.executable, "-I", "-c", HTTPS_POST, url,
                                 self.info.ca_pem, json.dumps(dict(headers or {})),
                                 str(timeout)], resolver),
            input=body, capture_output=True, timeout=timeout + 30, check=False,
            env={"PATH": MINIMAL_PATH})
        if proc.returncode != 0:
            raise SandboxError(f"https probe failed: {proc.stderr.decode().strip()}")
        return int(proc.stdout.split()[0])

    def run_otel_client(self, env: Mapping[str, str], *, resolver: Resolver = "local",
                        timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        """Run the real OTel SDK client in the container with only ``env`` as its
        configuration (plus ``OTEL_EXPORTER_OTLP_CERTIFICATE`` = the test CA, and PATH)."""
        full = {**env, "OTEL_EXPORTER_OTLP_CERTIFICATE": self.info.ca_pem,
                "PATH": MINIMAL_PATH}
        return self.run_in_container([sys.executable, str(E2E / "otel_client.py")],
                                     env=full, resolver=resolver, timeout=timeout,
                                     base_env=False)

    def run_via_launcher(self, env_file: Path, consumer: str,
                         inherited: Mapping[str, str] | None = None, *args: str,
                         resolver: Resolver = "local", cwd: Path | None = None,
                         timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        """Run a consumer (``"python"``: otel_client.py, ``"js"``: js/otel-client.js,
        ``"claude"``: the real Claude Code with ``args``) in the container the way the
        agent starts: ``examples/launch-agent.sh`` reads ``env_file`` and execs it. Its
        environment is only what the launcher passes on from ``inherited`` (what the
        entrypoint had exported) plus the test CA (trust, not configuration) and PATH."""
        trust = {"python": {"OTEL_EXPORTER_OTLP_CERTIFICATE": self.info.ca_pem},
                 "js": {"NODE_EXTRA_CA_CERTS": self.info.ca_pem},
                 "claude": {"NODE_EXTRA_CA_CERTS": self.info.ca_pem}}[consumer]
        argv = {"python": [sys.executable, str(E2E / "otel_client.py")],
                "js": [which("node"), str(E2E / "js" / "otel-client.js")],
                "claude": [which("node"), str(CLAUDE_CODE), *args]}[consumer]
        env = {**(inherited or {}), **trust, "PATH": MINIMAL_PATH,
               "OTEL_ENV_FILE": str(env_file)}
        return self.run_in_container(["/bin/sh", str(REPO / "examples" / "launch-agent.sh"),
                                      *argv], env=env, resolver=resolver, timeout=timeout,
                                     base_env=False, cwd=cwd)

    # --- the container's CoreDNS ----------------------------------------------------------

    def start_container_coredns(self, corefile: Path, pidfile: Path, *,
                                wait_for: str | None = LOCAL_DNS,
                                timeout: float = 15.0) -> int:
        """Run ``coredns -conf COREFILE -pidfile PIDFILE`` in the container; its PID.

        Waits until the pidfile exists and ``wait_for`` (if any) answers a query.
        """
        self.stop_container_coredns()
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.info.container_coredns_pidfile = str(pidfile)
        proc = self.spawn("container-coredns", self.container,
                          [str(COREDNS), "-conf", str(corefile), "-pidfile", str(pidfile)])

        def ready() -> bool:
            self.alive_or_raise("container-coredns")
            if not pidfile.exists():
                return False
            if wait_for is None:
                return True
            return self.dns_query("harness-probe.invalid", server=wait_for,
                                  timeout=0.5).rcode not in {"TIMEOUT", "ERROR"}

        try:
            wait_until(ready, timeout, "the container's CoreDNS",
                       lambda: self.log("container-coredns"))
        except BaseException:
            self.stop_container_coredns()
            raise
        return proc.pid

    def container_coredns_pid(self) -> int | None:
        """PID of the container's CoreDNS, if one is running inside the container."""
        pidfile = Path(self.info.container_coredns_pidfile or "/nonexistent")
        proc = self.procs.get("container-coredns")
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        if pidfile.exists():
            text = pidfile.read_text().strip()
            if text.isdigit() and int(text) in netns_pids(self.container):
                return int(text)
        return None

    def stop_container_coredns(self, timeout: float = 5.0) -> None:
        """Stop the container's CoreDNS (if running) and remove its pidfile."""
        pid = self.container_coredns_pid()
        proc = self.procs.pop("container-coredns", None)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if proc is not None:
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout,
                           "the container's CoreDNS to stop")
        if self.info.container_coredns_pidfile:
            Path(self.info.container_coredns_pidfile).unlink(missing_ok=True)

    def reset_container(self) -> None:
        """Stop the container's CoreDNS and every other process in the container (held
        connections, an entrypoint's leftovers) and flush its filter tables (policies
        ACCEPT)."""
        self.stop_container_coredns()
        kill_netns_processes(self.container)
        for label in [k for k in self.procs if k.startswith("hold-")]:
            self.procs.pop(label).wait(timeout=5)
        empty = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
                 ":OUTPUT ACCEPT [0:0]\nCOMMIT\n")
        for tool in ("iptables-restore", "ip6tables-restore"):
            proc = self.run_in_container([which(tool)], input=empty, resolver=None)
            if proc.returncode != 0:
                raise SandboxError(f"{tool} in the container: {proc.stderr.strip()}")

    # --- the receiver -------------------------------------------------------------------

    def set_expected_auth(self, value: str) -> None:
        """Set the ``Authorization`` value the receiver accepts (re-read per request)."""
        Path(self.info.auth_file).write_text(value + "\n")

    def requests(self) -> list[dict[str, Any]]:
        """Every request the receiver recorded so far, oldest first."""
        text = Path(self.info.requests_log).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        Path(self.info.requests_log).write_text("")

    # --- the upstream DNS's answers ----------------------------------------------------

    def set_hosts(self, changes: Mapping[str, str | None], *, replace: bool = False,
                  timeout: float = 10.0) -> None:
        """Change what the upstream DNS answers: ``name -> address`` (None: NXDOMAIN from
        now on), on top of today's answers or, with ``replace``, instead of them. Returns
        once every upstream resolver serves the new answers."""
        hosts = {} if replace else dict(self.info.hosts)
        for name, addr in changes.items():
            if addr is None:
                hosts.pop(name, None)
            else:
                hosts[name] = addr
        gone = set(self.info.hosts) - set(hosts)
        path = Path(self.info.hosts_file)
        tmp = path.with_name(path.name + ".new")
        tmp.write_text(hosts_text(hosts))
        tmp.replace(path)
        self.info.hosts = hosts

        def served() -> bool:
            for server in self.info.upstream_resolvers:
                for name in {*changes, *gone}:
                    want = [hosts[name]] if name in hosts else []
                    reply = self.upstream_answer(name, server)
                    if reply.answers != want or reply.rcode != ("NOERROR" if want else
                                                                "NXDOMAIN"):
                        return False
            return True

        wait_until(served, timeout, f"the upstream DNS to serve {dict(changes)}",
                   lambda: self.log("upstream-coredns")[-2000:])

    def reset_hosts(self) -> None:
        """Back to the upstream answers the sandbox started with (``HOSTS``)."""
        if self.info.hosts != HOSTS:
            self.set_hosts(HOSTS, replace=True)

    def upstream_log_mark(self, label: str = "upstream-coredns") -> int:
        """A position in a CoreDNS's query log (the upstream's, or ``container-coredns``
        for the container's own), for :meth:`upstream_queries`."""
        return len(self.log(label).encode())

    def upstream_queries(self, since: int = 0,
                         label: str = "upstream-coredns") -> Counter[tuple[str, str]]:
        """``(name, type)`` -> queries that CoreDNS logged after the ``since`` mark."""
        log = self.log(label).encode()[since:]
        return count_queries(log.decode(errors="replace"))

    # --- held connections -----------------------------------------------------------------

    def hold_connection(self, addr: str, port: int = ECHO_PORT,
                        timeout: float = 2.0) -> HeldConnection:
        """Open a TCP connection from the container to an echo listener and keep it."""
        label = f"hold-{addr}-{port}-{token_hex(2)}"
        argv = [*self.container_argv([sys.executable, "-I", "-c", HOLD_CLIENT, addr,
                                      str(port), str(timeout)], None)]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs[label] = proc
        return HeldConnection(proc, timeout)


class HeldConnection:
    """A TCP connection from inside the container, held open by a child process."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        self.proc, self.timeout = proc, timeout
        self.state = self.reply()

    def reply(self) -> str:
        """The client's next word (``connected``, ``echo``, ``timeout``, an errno...)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout + 10)
        if not ready:
            raise SandboxError("the held connection's client did not answer")
        line = self.proc.stdout.readline().decode().strip()
        return line or "client exited"

    def send(self, text: str = "ping") -> str:
        """Send ``text`` on the connection: ``echo`` when it came back within the
        timeout, ``timeout`` when nothing came back, or what else happened."""
        if self.state != "connected":
            raise SandboxError(f"the connection was never open: {self.state}")
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        return self.reply()

    def close(self) -> None:
        """Close the connection (end the client)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
