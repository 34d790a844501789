"""What the live tables say about an address: pins from owner tags (in grace too), the
history, rules open for another port, blocked ranges. Pure: lines as iptables-save
prints them."""

from __future__ import annotations

import pytest

from statekit.netfilter import explain
from statekit.netfilter.explain import Blocked, Opening, Pin, View

LINES = [
    "-A OUTPUT -o lo -m comment --comment \"statekit:fw-loopback\" -j ACCEPT",
    "-A OUTPUT -d 169.254.0.0/16 -m comment --comment \"statekit:fw-drop-private\" -j DROP",
    "-A OUTPUT -d 172.16.0.0/12 -m comment --comment \"statekit:fw-drop-private\" -j DROP",
    "-A OUTPUT -d 127.0.0.53/32 -p udp -m udp --dport 53 -m comment --comment "
    "\"statekit:fw-dns-local-udp\" -j ACCEPT",
    "-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "
    "\"statekit:fw-established\" -j ACCEPT",
    "-A OUTPUT -d 140.82.112.0/20 -p tcp -m tcp --dport 443 -m comment --comment "
    "\"statekit:fw-github\" -j ACCEPT",
    "-A OUTPUT -d 198.18.0.30/32 -m comment --comment \"statekit:fw-allowlist "
    "a.allowed.test\" -j ACCEPT",
    "-A OUTPUT -d 198.18.0.31/32 -m comment --comment \"statekit:fw-allowlist "
    "b.allowed.test gone=1733472000\" -j ACCEPT",
    "-A OUTPUT -d 198.18.0.30/32 -m comment --comment \"statekit:fw-allowlist "
    "c.allowed.test\" -j ACCEPT",
    "-A OUTPUT -d 198.18.0.10/32 -p tcp -m tcp --dport 443 -m comment --comment "
    "\"statekit:otlp-firewall otlp gateway otlp.example.net\" -j ACCEPT",
    "-A OUTPUT -d 198.18.0.50/32 -m comment --comment \"statekit:fw-static my note\" "
    "-j ACCEPT",
    "-A OUTPUT -d 2001:db8::30/128 -m comment --comment \"statekit:fw-allowlist "
    "a.allowed.test\" -j ACCEPT",
    "-A OUTPUT -d 10.9.0.0/16 -j REJECT --reject-with icmp-port-unreachable",
    "-A OUTPUT ! -d 10.0.0.0/8 -p tcp -j ACCEPT",
    "-A OUTPUT -d 8.8.8.8/32 -p udp -m owner --uid-owner 0 -m udp --dport 53 -m comment "
    "--comment \"statekit:fw-dns-upstream\" -j ACCEPT",
    "-A OUTPUT -p udp -m comment --comment \"statekit:fw-drop-udp\" -j DROP",
    "-A OUTPUT -m comment --comment \"statekit:fw-log\" -j NFLOG --nflog-prefix "
    "CODETAINER_DROP --nflog-group 100",
]
HOSTS = {"fw-allowlist": frozenset({"a.allowed.test", "b.allowed.test", "c.allowed.test"}),
         "otlp-firewall": frozenset({"otlp.example.net"}), "fw-static": frozenset()}


@pytest.fixture
def view() -> View:
    return View(LINES, HOSTS, {"198.18.0.40": ("gone.allowed.test", 1733400000.0),
                               "198.18.0.30": ("old.allowed.test", 1.0)})


def test_an_accepted_address_maps_to_every_name_pinned_to_it(view: View) -> None:
    assert view.pins("198.18.0.30") == [Pin("a.allowed.test", "fw-allowlist"),
                                        Pin("c.allowed.test", "fw-allowlist")]
    assert view.pins("2001:db8:0::30") == [Pin("a.allowed.test", "fw-allowlist")]


def test_a_pin_in_grace_carries_when_it_left_the_answers(view: View) -> None:
    [pin] = view.pins("198.18.0.31")
    assert (pin.name, pin.gone, pin.status) == ("b.allowed.test", 1733472000.0, "grace")


def test_the_history_names_an_address_no_rule_holds(view: View) -> None:
    [pin] = view.pins("198.18.0.40")
    assert (pin.name, pin.left, pin.status, pin.state) == (
        "gone.allowed.test", 1733400000.0, "left", "")
    assert view.pins("198.18.0.41") == []


def test_a_comment_is_not_a_name(view: View) -> None:
    assert view.pins("198.18.0.10") == [Pin("otlp.example.net", "otlp-firewall")]
    assert view.pins("198.18.0.50") == []  # "note" is not one of fw-static's hosts


def test_a_state_the_caller_does_not_know_needs_a_dotted_dns_name() -> None:
    lines = ["-A OUTPUT -d 192.0.2.1/32 -m comment --comment \"statekit:x api.example.com\""
             " -j ACCEPT",
             "-A OUTPUT -d 192.0.2.2/32 -m comment --comment \"statekit:x my note\" -j ACCEPT",
             "-A OUTPUT -d 192.0.2.3/32 -m comment --comment \"statekit:x a.b gone=soon\" "
             "-j ACCEPT",
             "-A OUTPUT -d 192.0.2.4/32 -m comment --comment \"statekit:x v1.2\" -j ACCEPT",
             "-A OUTPUT -d 192.0.2.5/32 -m comment --comment \"other a.example.com\" -j ACCEPT",
             "-A OUTPUT -d 192.0.2.6/32 -m comment --comment \"statekit:x b.example.com\" "
             "-j DROP"]
    view = View(lines)
    assert view.pins("192.0.2.1") == [Pin("api.example.com", "x")]
    assert [view.pins(f"192.0.2.{n}") for n in range(2, 7)] == [[]] * 5


def test_rules_open_for_another_port_or_under_conditions(view: View) -> None:
    assert view.openings("140.82.115.9") == [Opening("fw-github", "tcp", "443")]
    assert view.openings("198.18.0.10") == [Opening("otlp-firewall", "tcp", "443")]
    [dns] = view.openings("8.8.8.8")
    assert (dns.describe(), dns.unconditional) == ("udp/53 under conditions", False)
    assert view.openings("10.1.2.3") == []  # "! -d 10.0.0.0/8" is no destination
    assert Opening("fw-allowlist").describe() == "all traffic"
    assert Opening("fw-allowlist").unconditional


def test_blocked_ranges_are_drop_or_reject_rules_for_all_traffic(view: View) -> None:
    assert view.blocked("169.254.169.254") == Blocked("169.254.0.0/16", "fw-drop-private")
    assert view.blocked("172.31.255.1") == Blocked("172.16.0.0/12", "fw-drop-private")
    assert view.blocked("10.9.1.1") == Blocked("10.9.0.0/16", None)
    assert view.blocked("198.18.0.40") is None
    assert view.blocked("not an address") is None


@pytest.mark.parametrize(("line", "words"), [
    ('-A OUTPUT -m comment --comment "a \\"quoted\\" \\\\ word" -j ACCEPT',
     ["-A", "OUTPUT", "-m", "comment", "--comment", 'a "quoted" \\ word', "-j", "ACCEPT"]),
    ('-A OUTPUT -m comment --comment "" -j DROP',
     ["-A", "OUTPUT", "-m", "comment", "--comment", "", "-j", "DROP"]),
    ("-A  OUTPUT ", ["-A", "OUTPUT"]),
])
def test_save_lines_split_as_iptables_quotes_them(line: str, words: list[str]) -> None:
    assert explain.split_save(line) == words


def test_networks_and_addresses() -> None:
    assert explain.network("10.1.2.3/8") == (4, 10 << 24, 8)
    assert explain.network("2001:db8::1") == (6, int.from_bytes(bytes.fromhex(
        "20010db8000000000000000000000001"), "big"), 128)
    assert [explain.network(t) for t in ("10.0.0.0/33", "x/8", "10.0.0.0/a", "")] == [None] * 4
    assert explain.canonical("2001:0db8:0::1") == "2001:db8::1"
    assert explain.canonical("nope") is None


def test_hostile_history_entries_are_skipped() -> None:
    history = {"nope": ("a.test", 1.0), "192.0.2.1": ("a.test", "soon"),
               "192.0.2.2": ("a.test",), "192.0.2.3": (1, 2.0), "192.0.2.4": ("a.test", True),
               "192.0.2.5": ("b.test", 5)}
    view = View((), None, history)  # type: ignore[arg-type]
    assert [view.pins(f"192.0.2.{n}") for n in range(1, 5)] == [[]] * 4
    assert view.pins("192.0.2.5") == [Pin("b.test", "", None, 5.0)]


def test_hostile_lines_never_raise() -> None:
    import random

    rng = random.Random(21)
    alphabet = ' "\\-!/:.ADjmdp0123456789abcfx'
    for _ in range(3000):
        line = "-A OUTPUT " + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        view = View([line, *rng.sample(LINES, 3)], HOSTS)
        view.pins("198.18.0.30")
        view.openings("198.18.0.30")
        view.blocked("169.254.1.1")
