"""Validation says invalid exactly when the real binaries would refuse (issue 22, item 1).

For each field a table of good and bad values. statekit's verdict is the loader's (what
``validate`` says), or for a chain no state declares, ``converge --check``'s (checked
against the live table before anything is applied). The kernel's verdict is the real
restore in a private network namespace, with both iptables backends (nf_tables and
legacy: a state file valid on one machine is valid on every machine), and the real save
afterwards: a rule the kernel takes but changes (a prefix cut short, a port range that
matches every port) could never be verified, so it counts as refused. The input is the
rule as statekit writes it when statekit accepts it, and as written otherwise. CoreDNS'
verdict is the real ``coredns -conf FILE``, started in the namespace on a free port.

Where statekit is stricter than the binaries on purpose, the case says why (``STRICTER``)
and the test checks that the binaries do take it: nothing is stricter by accident.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from statekit.errors import StateError
from statekit.load import loader
from statekit.netfilter.rule import save_string
from statekit.resources import coredns_zone, iptables_rule
from tests.conftest import COREDNS, delete_netns, in_netns, make_netns, statekit, write

pytestmark = [pytest.mark.netns, pytest.mark.needs("coredns")]

BACKENDS = {"ipv4": ("iptables", "iptables-legacy"), "ipv6": ("ip6tables", "ip6tables-legacy")}
LONG_ID = "x" * 250


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    name = make_netns()
    try:
        yield name
    finally:
        delete_netns(name)


# --- iptables_rule ---------------------------------------------------------------------

# (case id, the state's fields beyond chain OUTPUT / jump ACCEPT, chains declared)
RULES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    *[(f"jump-{j}", {"jump": j}, ()) for j in ("ACCEPT", "DROP", "REJECT", "RETURN", "LOG",
                                                 "NFLOG")],
    *[(f"jump-REJECT-{t}", {"jump": "REJECT", "table": t}, ()) for t in ("nat", "mangle",
                                                                         "raw")],
    ("jump-DROP-nat", {"jump": "DROP", "table": "nat"}, ()),
    ("jump-DROP-mangle", {"jump": "DROP", "table": "mangle"}, ()),
    ("jump-LOG-nat", {"jump": "LOG", "table": "nat"}, ()),
    ("jump-NFLOG-raw", {"jump": "NFLOG", "table": "raw"}, ()),
    ("jump-declared", {"jump": "fw-allow"}, ("fw-allow",)),
    ("jump-typo", {"jump": "ACCEPTT"}, ()),
    ("jump-foreign", {"jump": "DOCKER"}, ()),
    ("chain-foreign", {"chain": "DOCKER-USER"}, ()),
    ("jump-typo-declared", {"jump": "fw-alow"}, ("fw-allow",)),
    ("jump-lower", {"jump": "accept"}, ()),
    ("jump-builtin", {"jump": "INPUT"}, ()),
    ("chain-INPUT", {"chain": "INPUT"}, ()),
    ("chain-declared", {"chain": "fw-allow"}, ("fw-allow",)),
    ("chain-typo", {"chain": "OUTPT"}, ()),
    ("chain-28", {"chain": "c" * 28}, ("c" * 28,)),
    ("chain-29", {"chain": "c" * 29}, ("c" * 29,)),
    ("chain-dash", {"chain": "-abc"}, ("-abc",)),
    ("chain-dot", {"chain": ".abc"}, (".abc",)),
    ("chain-colon", {"chain": "a:b"}, ("a:b",)),
    ("chain-ACCEPT", {"chain": "ACCEPT"}, ("ACCEPT",)),
    ("chain-LOG", {"chain": "LOG"}, ("LOG",)),
    ("out-lo", {"out_interface": "lo"}, ()),
    ("out-wildcard", {"out_interface": "eth+"}, ()),
    ("out-15", {"out_interface": "a" * 15}, ()),
    ("out-14-plus", {"out_interface": "a" * 14 + "+"}, ()),
    ("out-15-plus", {"out_interface": "a" * 15 + "+"}, ()),
    ("out-16", {"out_interface": "a" * 16}, ()),
    ("out-plus", {"out_interface": "+"}, ()),
    ("out-at", {"out_interface": "a@b"}, ()),
    ("in-OUTPUT", {"in_interface": "lo"}, ()),
    ("in-INPUT", {"chain": "INPUT", "in_interface": "lo"}, ()),
    ("out-INPUT", {"chain": "INPUT", "out_interface": "lo"}, ()),
    *[(f"protocol-{p}", {"protocol": p}, ()) for p in ("tcp", "udp", "icmp", "all", "TCP")],
    ("protocol-sctp", {"protocol": "sctp"}, ()),
    *[(f"dport-{p}", {"protocol": "tcp", "dport": p}, ())
      for p in (0, 443, 65535, 65536, "8000:8080", "8080:8000", "0:65535", "5:5", "https")],
    ("sport-udp", {"protocol": "udp", "sport": "1024:65535"}, ()),
    ("dport-no-protocol", {"dport": 443}, ()),
    ("log-prefix-29", {"jump": "LOG", "log_prefix": "p" * 29}, ()),
    ("log-prefix-30", {"jump": "LOG", "log_prefix": "p" * 30}, ()),
    ("nflog-prefix-63", {"jump": "NFLOG", "log_prefix": "p" * 63}, ()),
    ("nflog-prefix-64", {"jump": "NFLOG", "log_prefix": "p" * 64}, ()),
    ("nflog-prefix-quote", {"jump": "NFLOG", "log_prefix": 'a "b"'}, ()),
    *[(f"nflog-group-{g}", {"jump": "NFLOG", "nflog_group": g}, ())
      for g in (0, 100, 65535, 65536, -1)],
    *[(f"uid-{u}", {"uid_owner": u}, ()) for u in (0, 1000, 4294967294, 4294967295)],
    ("uid-INPUT", {"chain": "INPUT", "uid_owner": 0}, ()),
    ("uid-nat-POSTROUTING", {"table": "nat", "chain": "POSTROUTING", "uid_owner": 0}, ()),
    ("uid-mangle-FORWARD", {"table": "mangle", "chain": "FORWARD", "uid_owner": 0}, ()),
    *[(f"ctstate-{c}", {"ctstate": [c]}, ()) for c in ("INVALID", "NEW", "RELATED",
                                                      "ESTABLISHED", "UNTRACKED", "SNAT",
                                                      "DNAT", "ESTABLISHD")],
    ("ctstate-raw", {"table": "raw", "ctstate": ["NEW"]}, ()),
    ("comment-200", {"comment": "c" * 200}, ()),
    ("comment-201", {"comment": "c" * 201}, ()),
    ("comment-quote", {"comment": "say 'hi'"}, ()),
    ("id-250", {"id": LONG_ID}, ()),
    *[(f"destination-{d}", {"destination": d}, ())
      for d in ("10.0.0.0/8", "192.0.2.1", "10.0.0.0/33", "0.0.0.0/0", "300.1.1.1")],
    ("destination-ipv6", {"family": "ipv6", "destination": "2001:db8::1"}, ()),
    *[(f"icmpv6-{t}", {"family": "ipv6", "protocol": "icmp", "icmpv6_type": t}, ())
      for t in (2, 133, "packet-too-big", 255, 256, "no-such-type")],
    ("syn-true", {"protocol": "tcp", "syn": True}, ()),
    ("syn-false", {"protocol": "tcp", "syn": False}, ()),
]

#: statekit refuses these, the binaries take them: on purpose, and why.
STRICTER = {
    "chain-dot": "chain names are letters, digits, _ . - without a leading . or -: "
                 "statekit reads iptables-save's output by words",
    "chain-colon": "as chain-dot",
    "chain-LOG": "-j LOG would be read as the target, never as the chain",
    "out-at": "interface names are letters, digits, _ . - and a trailing +, as the "
              "kernel names devices",
    "protocol-sctp": "the protocols statekit's rules are written for: tcp, udp, icmp, all",
    "nflog-prefix-quote": "prefixes and comments are written without quotes or "
                          "backslashes: rules compare as iptables-save prints them",
    "comment-quote": "as nflog-prefix-quote (the owner tag is read back from the comment)",
    "comment-201": "the tag keeps room for a destination_host name and its grace mark",
}
#: Cases whose statekit verdict needs the live table (a chain no state declares).
LIVE = {"chain-typo", "jump-typo", "jump-foreign", "chain-foreign"}


def rule_state(fields: dict[str, Any], chains: tuple[str, ...]) -> dict[str, Any]:
    """The case as a state file: the rule, and an iptables_chain state per chain."""
    rule = {"id": "r", "type": "iptables_rule", "phase": "main", "chain": "OUTPUT",
            "jump": "ACCEPT", **fields}
    table = fields.get("table", "filter")
    family = fields.get("family", "ipv4")
    declared = [{"id": f"c{i}", "type": "iptables_chain", "phase": "main", "chain": c,
                 "table": table, "family": family} for i, c in enumerate(chains)]
    return {"phases": ["main"], "states": [*declared, rule]}


def statekit_takes(tmp_path: Path, doc: dict[str, Any]) -> tuple[bool, str, Any]:
    path = write(tmp_path / "case.yaml", yaml.safe_dump(doc, sort_keys=False))
    try:
        program = loader.load([str(path)], environ={})
    except StateError as exc:
        return False, str(exc), None
    return True, "", program


def raw_rule(fields: dict[str, Any], family: str) -> str:
    """The rule as written, in iptables-save's form, nothing checked (for a rule statekit
    refuses: what the kernel would say of it)."""
    out = [f"-A {fields.get('chain', 'OUTPUT')}"]
    for key, opt in (("source", "-s"), ("destination", "-d"), ("in_interface", "-i"),
                     ("out_interface", "-o")):
        if key in fields:
            value = str(fields[key])
            out += [opt, value + ("/32" if key in ("source", "destination")
                                  and "/" not in value else "")]
    protocol = str(fields.get("protocol", "all")).lower()
    if protocol != "all":
        out += ["-p", "ipv6-icmp" if (protocol, family) == ("icmp", "ipv6") else protocol]
    if protocol != "all" and ("sport" in fields or "dport" in fields):
        out += ["-m", protocol]
    out += [w for key in ("sport", "dport") if key in fields
            for w in (f"--{key}", str(fields[key]))]
    if "icmpv6_type" in fields:
        out += ["-m", "icmp6", "--icmpv6-type", str(fields["icmpv6_type"])]
    if "uid_owner" in fields:
        out += ["-m", "owner", "--uid-owner", str(fields["uid_owner"])]
    if "ctstate" in fields:
        out += ["-m", "conntrack", "--ctstate", ",".join(fields["ctstate"])]
    tag = "statekit:" + fields.get("id", "r") + (f" {fields['comment']}"
                                                 if "comment" in fields else "")
    out += ["-m", "comment", "--comment", save_string(tag), "-j", fields.get("jump", "ACCEPT")]
    if "log_prefix" in fields:
        opt = "--log-prefix" if fields.get("jump") == "LOG" else "--nflog-prefix"
        out += [opt, save_string(fields["log_prefix"])]
    if fields.get("nflog_group"):
        out += ["--nflog-group", str(fields["nflog_group"])]
    return " ".join(out)


def kernel_takes(ns: str, table: str, family: str, chains: tuple[str, ...],
                 lines: list[str]) -> tuple[bool, str]:
    """Whether both backends' restore takes ``lines`` and their save prints them back."""
    text = f"*{table}\n" + "".join(f":{c} - [0:0]\n" for c in chains) + \
        "".join(f"{line}\n" for line in lines) + "COMMIT\n"
    for tool in BACKENDS[family]:
        run = in_netns(ns, [f"{tool}-restore"], input=text, check=False)
        if run.returncode:
            return False, f"{tool}-restore: {run.stderr.strip()[:200]}"
        saved = [ln for ln in in_netns(ns, [f"{tool}-save", "-t", table]).stdout.splitlines()
                 if ln.startswith("-A ")]
        if saved != lines:
            return False, f"{tool}-save printed {saved}"
    return True, ""


def statekit_lines(program: Any, family: str) -> list[str]:
    rule = next(s for s in program.states if s.type == "iptables_rule")
    return iptables_rule.expand(rule.spec, family, {})


@pytest.mark.parametrize(("case", "fields", "chains"), RULES, ids=[c[0] for c in RULES])
def test_a_rule_is_valid_exactly_when_the_kernel_takes_it(
        ns: str, tmp_path: Path, case: str, fields: dict[str, Any],
        chains: tuple[str, ...]) -> None:
    doc = rule_state(fields, chains)
    ok, why, program = statekit_takes(tmp_path, doc)
    if case in LIVE:  # validate cannot know: the live check before anything is applied
        assert ok or "did you mean" in why, why
        root = tmp_path / "root"
        root.mkdir()
        run = statekit(["converge", "--check", "--root", str(root),
                        str(tmp_path / "case.yaml")], netns=ns)
        ok, why = run.returncode == 0, run.stderr
        assert run.returncode in (0, 3), run.output
    table, family = fields.get("table", "filter"), fields.get("family", "ipv4")
    lines = statekit_lines(program, family) if ok else [raw_rule(fields, family)]
    taken, said = kernel_takes(ns, table, family, chains, lines)
    if STRICTER.get(case):
        assert not ok and taken, f"{case}: statekit {why!r}; kernel {said!r}"
        return
    assert ok == taken, f"{case}: statekit {'takes' if ok else 'refuses: ' + why}; " \
        f"the kernel {'takes' if taken else 'refuses: ' + said}"
    if not ok:  # named: file:line: states[<id>].field
        assert f"states[{fields.get('id', 'r')}]." in why or "states[c0]." in why, why


# --- coredns_zone ----------------------------------------------------------------------

PORT = 5301
FORWARD = ["192.0.2.53"]
# (case id, the fields of each zone state)
ZONES: list[tuple[str, list[dict[str, Any]]]] = [
    ("zone", [{"zone": "a.example"}]),
    ("zone-case-dot", [{"zone": "A.Example."}]),
    ("zone-root", [{"zone": "."}]),
    ("zone-label-63", [{"zone": "l" * 63 + ".example"}]),
    ("zone-label-64", [{"zone": "l" * 64 + ".example"}]),
    ("zone-empty-label", [{"zone": "a..example"}]),
    ("zone-underscore", [{"zone": "_tcp.example"}]),
    ("zone-leading-hyphen", [{"zone": "-a.example"}]),
    ("zone-twice", [{"zone": ["a.example", "a.example"]}]),
    ("zone-two-states", [{"zone": "a.example"}, {"zone": "a.example"}]),
    ("zone-two-states-binds", [{"zone": "a.example", "bind": ["127.0.0.1"]},
                               {"zone": "a.example", "bind": ["::1"]}]),
    ("zone-two-states-all", [{"zone": "a.example"},
                             {"zone": "a.example", "bind": ["127.0.0.1"]}]),
    ("zone-two-states-wildcard", [{"zone": "a.example", "bind": ["0.0.0.0"]},
                                  {"zone": "a.example", "bind": ["127.0.0.1"]}]),
    ("bind-same", [{"zone": "a.example", "bind": ["::1", "::1"]}]),
    ("bind-v4", [{"zone": "a.example", "bind": ["127.0.0.1"]}]),
    ("bind-v6", [{"zone": "a.example", "bind": ["::1"]}]),
    ("bind-both", [{"zone": "a.example", "bind": ["127.0.0.1", "::1"]}]),
    ("bind-twice", [{"zone": "a.example", "bind": ["::1", "0:0:0:0:0:0:0:1"]}]),
    ("bind-name", [{"zone": "a.example", "bind": ["lo"]}]),
    ("forward-15", [{"zone": "a.example",
                     "forward": [f"192.0.2.{i}" for i in range(1, 16)]}]),
    ("forward-16", [{"zone": "a.example",
                     "forward": [f"192.0.2.{i}" for i in range(1, 17)]}]),
    ("forward-port", [{"zone": "a.example", "forward": ["192.0.2.1:5353"]}]),
    ("forward-v6", [{"zone": "a.example", "forward": ["[2001:db8::1]:53"]}]),
    ("port-0", [{"zone": "a.example", "port": 0}]),
    ("port-65536", [{"zone": "a.example", "port": 65536}]),
    ("reload-2", [{"zone": "a.example", "reload": 2}]),
    ("reload-1", [{"zone": "a.example", "reload": 1}]),
    ("cache-1", [{"zone": "a.example", "cache": 1}]),
    ("cache-0", [{"zone": "a.example", "cache": 0}]),
    ("cache-86401", [{"zone": "a.example", "cache": 86401}]),
]
ZONE_STRICTER = {
    "zone-underscore": "a zone is a host name (letters, digits, inner hyphens): the names "
                       "the firewall resolves for the same allowlist",
    "zone-leading-hyphen": "as zone-underscore",
    "bind-name": "bind takes addresses: statekit compares them to find overlapping blocks",
    "zone-two-states-wildcard": "a wildcard bind is every address: two blocks of one zone "
                                "on it and on one of its addresses are refused (fail closed: "
                                "which block answers depends on the socket, not the file)",
    "port-0": "port 0 would be a port nobody can find (CoreDNS picks one)",
    "cache-86401": "a cache of more than a day outlives every pin and grace",
}


def zone_doc(states: list[dict[str, Any]]) -> dict[str, Any]:
    return {"phases": ["main"], "states": [
        {"id": f"z{i}", "type": "coredns_zone", "phase": "main",
         "corefile": "/etc/coredns/Corefile", "port": PORT, "forward": FORWARD, **fields}
        for i, fields in enumerate(states)]}


def raw_block(fields: dict[str, Any]) -> str:
    zones = fields["zone"] if isinstance(fields["zone"], list) else [fields["zone"]]
    port = fields.get("port", PORT)
    body = [f"bind {' '.join(fields['bind'])}"] if fields.get("bind") else []
    body.append(f"forward . {' '.join(fields.get('forward', FORWARD))}")
    body += [f"{k} {fields[k]}{'s' if k == 'reload' else ''}" for k in ("cache", "reload")
             if k in fields]
    return "\n".join(f"{z}:{port} {{\n" + "".join(f"    {b}\n" for b in body) + "}"
                     for z in zones)


def coredns_takes(ns: str, tmp_path: Path, corefile: str) -> tuple[bool, str]:
    """Whether the real CoreDNS starts on ``corefile`` (its banner) or exits (the error)."""
    path = write(tmp_path / "Corefile", corefile + "\n")
    log = tmp_path / "coredns.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, str(COREDNS), "-conf", str(path)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "CoreDNS-" in text:
                return True, ""
            if proc.poll() is not None:
                return False, text.strip()[-300:]
            time.sleep(0.02)
        raise AssertionError(f"CoreDNS neither started nor failed: {log.read_text()}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(("case", "states"), ZONES, ids=[c[0] for c in ZONES])
def test_a_zone_is_valid_exactly_when_coredns_starts_with_it(
        ns: str, tmp_path: Path, case: str, states: list[dict[str, Any]]) -> None:
    ok, why, program = statekit_takes(tmp_path, zone_doc(states))
    if ok:
        corefile = "\n".join(coredns_zone.render_block(s.spec, z) for s in program.states
                             for z in s.spec.zones)
    else:
        corefile = "\n".join(raw_block({"forward": FORWARD, **s}) for s in states)
    taken, said = coredns_takes(ns, tmp_path, corefile)
    if case in ZONE_STRICTER:
        assert not ok and taken, f"{case}: statekit {why!r}; CoreDNS {said!r}"
        return
    assert ok == taken, f"{case}: statekit {'takes' if ok else 'refuses: ' + why}; " \
        f"CoreDNS {'starts' if taken else 'refuses: ' + said}"


# --- a chain no state declares: checked live, before anything is applied ----------------

FOREIGN = """\
phases: [network]
states:
  - id: app-env
    type: env_file
    phase: network
    path: /etc/app.env
    entries: {A: "1"}
  - id: fw-lo
    type: iptables_rule
    phase: network
    chain: OUTPUT
    out_interface: lo
    jump: ACCEPT
  - id: fw-docker
    type: iptables_rule
    phase: network
    chain: OUTPUT
    family: both
    jump: DOCKER-USR
"""


def test_a_jump_to_a_chain_nobody_declares_is_checked_live_before_anything_is_applied(
        netns: str, tmp_path: Path, tool_log: Any) -> None:
    """``validate`` touches no machine: it cannot know, and says valid. A converge, and
    its dry run, read the live tables first: a chain they lack is exit 3 naming the file,
    the line and the field, with the nearest chain there, and nothing is touched (no
    restore, no file). Once the chain exists, the same states converge."""
    path = write(tmp_path / "s.yaml", FOREIGN)
    root = tmp_path / "root"
    root.mkdir()
    assert statekit(["validate", str(path)]).returncode == 0
    for family in ("iptables", "ip6tables"):
        in_netns(netns, [family, "-N", "DOCKER-USER"])
    for extra in (["--check"], [], ["--format", "json"]):
        tool_log.reset()
        run = statekit(["converge", "--root", str(root), *extra, str(path)], netns=netns,
                       env=tool_log.env)
        assert run.returncode == 3, run.output
        assert run.stderr == (
            f"statekit: {path}:19: states[fw-docker].jump: chain 'DOCKER-USR' does not exist "
            "in table filter (ipv4, ipv6) and no state declares it (an iptables_chain state "
            "creates one); did you mean 'DOCKER-USER'?\n")
        assert "iptables-restore" not in tool_log.calls()
        assert "ip6tables-restore" not in tool_log.calls()
        assert not (root / "etc").exists()  # (the program cache is statekit's own)
    error = json.loads(run.stdout)["error"]
    assert (error["line"], error["field"]) == (19, "states[fw-docker].jump")
    for family in ("iptables", "ip6tables"):
        in_netns(netns, [family, "-N", "DOCKER-USR"])
    run = statekit(["converge", "--root", str(root), str(path)], netns=netns)
    assert run.returncode == 0, run.output
    assert '-A OUTPUT -m comment --comment "statekit:fw-docker" -j DOCKER-USR' in \
        in_netns(netns, ["iptables-save"]).stdout
