"""``coredns_zone``: server blocks of a CoreDNS Corefile that a state owns.

Each zone of the state is one block, rendered canonically and marked by a
``# statekit:<id>`` line directly above it. Everything else in the Corefile is kept byte
for byte (:mod:`statekit.corefile` parses it with CoreDNS's own lexing rules). Blocks
already in the file stay where they are; new ones are appended after a blank line, in
the order of ``zone``; blocks marked with this id for a zone no longer wanted are removed.
``ensure: absent`` removes every block marked with this id and nothing else.

The canonical block, directives in this fixed order (each only when asked for)::

    # statekit:<id>
    <zone>:<port> {
        bind <bind...>
        template IN AAAA {          # aaaa: noerror (IPv6 lookups answer empty)
            rcode NOERROR
        }
        template ANY ANY {          # answer: nxdomain (a catch-all that denies)
            rcode NXDOMAIN
        }
        forward . <forward...>      # answer: forward (the default)
        <the pins' templates>       # answer: pinned (below)
        errors
        log
        cache <seconds>
        reload <seconds>s           # CoreDNS re-reads a changed Corefile by itself
    }

With ``answer: pinned`` (``pins_from: <iptables_rule id>``), the block answers the name
itself only with its pins: the addresses the firewall accepts for that name right now,
read from the rule's lines in the live table (``statekit:<rule> <name>``, not those in
grace), after the table is committed. So no answer is ever ahead of the firewall, by
construction: a failed restore leaves the old pins, a name that failed to resolve keeps
its last-known pins, and at first boot a name without pins answers NXDOMAIN::

    template IN A {                 # the pins, with a short TTL (pin_ttl)
        match "^api[.]example[.]com[.]$"
        fallthrough
        answer "api.example.com. 30 IN A 192.0.2.1"
    }
    template ANY ANY {              # other types of the name: no data
        match "^api[.]example[.]com[.]$"
        fallthrough
        rcode NOERROR
    }
    template ANY ANY {              # anything else in the zone (subdomains): NXDOMAIN
        rcode NXDOMAIN
    }

A zone that a block this state does not own already serves on the same port and an
overlapping address is a conflict (no ``bind``, ``0.0.0.0``, ``::``, an interface or
anything else that is no address is every address: a wildcard block next to ours would
answer on 127.0.0.1): the state fails naming both places and nothing is written, unless
``adopt`` takes the block over (all its keys are this state's zones).
"""

from __future__ import annotations

from statekit import dnsname
from statekit.digits import digits
from statekit.errors import ApplyError, FieldError
from statekit.host.files import ReadResult
from statekit.host.host import Host
from statekit.resources.base import EMPTY, Meta, Plan, Resource
from statekit.resources.managed_file import (
    FileSpec,
    apply_file,
    parse_mode,
    parse_owner,
    plan_file,
    predict_file,
    read_file,
)
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

    from statekit.corefile import Block, Corefile

#: A Corefile holds other blocks too, so one over this cap is an error, never replaced.
COREFILE_LIMIT = 4 << 20

#: One level of indentation inside a rendered block.
_INDENT = "    "


class PinSource(Record):
    """Where a pinned zone reads its answers: the lines of one ``iptables_rule`` state."""

    rule: str  # the rule state's id
    table: str = "filter"
    chain: str = "OUTPUT"
    tag: str = ""  # the rule's tag before the name (``statekit:<id>[ <comment>]``)


class ZoneSpec(Record):
    owner: str
    path: str
    present: bool
    zones: tuple[str, ...] = ()  # as parse_zone spells them: lower case, no trailing dot
    #: the same zones as a Corefile's block keys name them (``a.test.``, the root ``.``),
    #: to compare with the parsed keys; computed once, at parse
    zone_keys: tuple[str, ...] = ()
    port: int = 53
    bind: tuple[str, ...] = ()
    forward: tuple[str, ...] = ()
    answer: str = "forward"
    aaaa: str = "forward"
    cache: int | None = None
    log: bool = False
    errors: bool = False
    adopt: bool = False
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    where: str = ""  # the state's file:line, for the conflict message
    pins_from: str = ""  # answer: pinned: the iptables_rule state whose lines are the pins
    pin_ttl: int = 30
    reload: int | None = None
    source: PinSource | None = None  # pins_from, once linked
    after: tuple[str, ...] = ()  # pins_from and the purged chains that write its lines


class ZoneCurrent(Record):
    """The Corefile, and each zone's pins in the live firewall (answer: pinned)."""

    file: ReadResult
    pins: Mapping[str, tuple[str, ...]] = EMPTY
    #: the Corefile as the state wants it, when the read already knows it
    #: (:func:`wanted_content`: proved by an earlier converge of the same program, or
    #: computed here); None: the plan computes it (and says why it cannot)
    wanted: bytes | None = None


# --- validation --------------------------------------------------------------------


def parse_zone(value: str) -> str:
    """A DNS name as written in a block key: lower case, no trailing dot, ``.`` the root."""
    if value == ".":
        return "."
    try:
        return dnsname.normalise(value)
    except ValueError:
        raise FieldError("zone", f"{value!r} is not a DNS name (labels of letters, digits and "
                         "inner hyphens, at most 63 bytes each and 253 in all; or '.')") from None


def ip_text(value: str, *, unmap: bool = False) -> str | None:
    """``value`` as CoreDNS reads an IP address (Go's ``net.ParseIP``), in canonical text
    (``2001:db8::1``); None if it is none (Go takes no zone index: ``fe80::1%eth0``).
    ``unmap``: an IPv4-mapped IPv6 address as the IPv4 one, which Go holds alike."""
    import ipaddress

    if "%" in value:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if unmap and isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def parse_ip(value: str, field: str) -> str:
    address = ip_text(value)
    if address is None:
        raise FieldError(field, f"{value!r} is not an IP address")
    return address


def parse_upstream(value: str) -> str:
    """``address[:port]``: ``8.8.8.8``, ``8.8.8.8:5353``, ``2001:db8::1``, ``[::1]:53``."""
    host, port = value, ""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]")
        port = port.removeprefix(":") if sep and port.startswith(":") else "x" + port
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    address = parse_ip(host, "forward")
    if port and not (digits(port) and 1 <= int(port) <= 65535):
        raise FieldError("forward", f"{value!r} is not address[:port]")
    if not port:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _binds(values: Sequence[Any]) -> tuple[str, ...]:
    """The ``bind`` addresses in canonical form, each once: CoreDNS refuses an address
    written twice, and two spellings of one (``::1``, ``0:0:0:0:0:0:0:1``) are one."""
    return tuple(dict.fromkeys(parse_ip(str(b), "bind") for b in values))


def _zones(value: Any) -> tuple[str, ...]:
    if value is None:
        raise FieldError("zone", "zone is required with ensure: present")
    zones = tuple(parse_zone(str(z)) for z in ([value] if isinstance(value, str) else value))
    if len(set(zones)) != len(zones):
        raise FieldError("zone", "a zone is listed twice")
    return zones


def _zone_keys(zones: Sequence[str]) -> tuple[str, ...]:
    """``zones`` as :func:`statekit.corefile.parse_key` gives a block key's zone."""
    from statekit.corefile import normalise_zone

    return tuple(normalise_zone(z) for z in zones)


def _answer(fields: Mapping[str, Any]) -> str:
    answer = str(fields["answer"])
    if answer == "forward" and not fields.get("forward"):
        raise FieldError("forward", "answer: forward needs at least one forward address")
    if answer == "nxdomain" and (fields.get("forward") or fields.get("aaaa") == "noerror"):
        raise FieldError("answer", "answer: nxdomain takes neither forward nor aaaa: noerror")
    if answer == "pinned" and (fields.get("forward") or not fields.get("pins_from")):
        raise FieldError("answer", "answer: pinned needs pins_from (the iptables_rule state "
                         "whose addresses it answers) and takes no forward")
    if fields.get("pins_from") and answer != "pinned":
        raise FieldError("pins_from", "only with answer: pinned")
    return answer


# --- rendering and planning (pure) ----------------------------------------------------


def render_block(spec: ZoneSpec, zone: str, pins: Sequence[str] = ()) -> str:
    """The canonical block for ``zone`` (ends with ``}``, no newline); ``pins``: the
    addresses a pinned zone answers."""
    lines = [f"{zone}:{spec.port} {{"]
    if spec.bind:
        lines.append(f"bind {' '.join(spec.bind)}")
    if spec.aaaa == "noerror":
        lines += ["template IN AAAA {", f"{_INDENT}rcode NOERROR", "}"]
    if spec.answer == "pinned":
        lines += _pinned(spec, zone, pins)
    if spec.answer in ("nxdomain", "pinned"):
        lines += ["template ANY ANY {", f"{_INDENT}rcode NXDOMAIN", "}"]
    if spec.forward:
        lines.append(f"forward . {' '.join(spec.forward)}")
    lines += [name for name, on in (("errors", spec.errors), ("log", spec.log)) if on]
    if spec.cache is not None:
        lines.append(f"cache {spec.cache}")
    if spec.reload is not None:
        lines.append(f"reload {spec.reload}s")
    body = [f"{_INDENT}{line}" for line in lines[1:]]
    return "\n".join([lines[0], *body, "}"])


def _pinned(spec: ZoneSpec, zone: str, pins: Sequence[str]) -> list[str]:
    """The templates that answer ``zone`` itself with its pins (none: NXDOMAIN, from the
    catch-all template that follows); its subdomains fall through to NXDOMAIN."""
    if not pins or zone == ".":
        return []
    # CoreDNS matches the lower-cased name; a name the regex does not match falls
    # through to the next template (without `fallthrough`, it would be SERVFAIL)
    match = [f'{_INDENT}match "^{zone.replace(".", "[.]")}[.]$"', f"{_INDENT}fallthrough"]
    return ["template IN A {", *match,
            *(f'{_INDENT}answer "{zone}. {spec.pin_ttl} IN A {addr}"' for addr in pins),
            "}", "template ANY ANY {", *match, f"{_INDENT}rcode NOERROR", "}"]


def _overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two ``bind`` lists can share an address: none, a wildcard (``0.0.0.0``,
    ``::``) or anything that is no IP address (an interface such as ``lo``, an import,
    ``{$ENV}``) is every address (fail closed)."""
    if not a or not b:
        return True
    norm = [{ip_text(x, unmap=True) for x in side} for side in (a, b)]
    if any(None in side or _WILDCARDS & side for side in norm):
        return True
    return bool(norm[0] & norm[1])


_WILDCARDS = frozenset({"0.0.0.0", "::"})  # noqa: S104 -- recognised, never bound


def _marker(spec: ZoneSpec) -> bytes:
    """Bytes every block owned by ``spec`` is preceded by (``# statekit:<id>``)."""
    return f"# statekit:{spec.owner}".encode()


def conflicts(cf: Corefile, spec: ZoneSpec) -> list[tuple[Block, str]]:
    """Unowned blocks that already serve one of ``spec``'s zones (same port, overlapping
    bind), each with the message that names both places."""
    found = []
    for block in cf.servers():
        if block.marker == spec.owner:
            continue
        for key in block.parsed_keys:
            if key.scheme == "dns" and key.zone in spec.zone_keys and key.port == spec.port \
                    and _overlap(block.binds, spec.bind):
                found.append((block, (
                    f"zone {key.zone} port {spec.port} is already served by the block at "
                    f"{spec.path}:{block.line} ({' '.join(block.keys)}); state "
                    f"{spec.owner!r}{_at(spec.where)} cannot add it (CoreDNS would "
                    "refuse to start; `adopt: true` takes such a block over)")))
                break
    return found


def find_conflict(cf: Corefile, spec: ZoneSpec) -> str | None:
    """Where an unowned block that ``spec`` may not adopt already serves its zones."""
    for block, message in conflicts(cf, spec):
        if not _adoptable(block, spec):
            return message
    return None


def _adoptable(block: Block, spec: ZoneSpec) -> bool:
    """With ``adopt``: an unowned block all of whose keys are zones of ``spec``."""
    if not spec.adopt or block.marker is not None:
        return False
    return all(k.scheme == "dns" and k.zone in spec.zone_keys and k.port == spec.port
               for k in block.parsed_keys)


def _at(where: str) -> str:
    return f" at {where}" if where else ""


def _block_zone(block: Block) -> str | None:
    keys = block.parsed_keys
    return keys[0].zone if len(keys) == 1 else None


def _assign(owned: Sequence[Block], keys: Sequence[str]) -> tuple[list[str | None], list[str]]:
    """Which wanted zone (by its key) each owned block becomes (same zone first, then in
    order), and the zones left for new blocks."""
    free = list(keys)
    result: list[str | None] = []
    for block in owned:
        zone = _block_zone(block)
        result.append(zone if zone in free else None)
        if zone in free:
            free.remove(zone)
    for index, zone in enumerate(result):
        if zone is None and free:
            result[index] = free.pop(0)
    return result, free


_PARSED: dict[bytes, Corefile] = {}


def parsed(data: bytes) -> Corefile:
    """``corefile.parse(data)``, remembered for the last few contents: the states of one
    Corefile (the catch-all, the allowlist, the OTLP block) plan against the same bytes on
    a refresh, and parsing is pure."""
    from statekit import corefile

    found = _PARSED.get(data)
    if found is None:
        found = corefile.parse(data)
        if len(_PARSED) >= 4:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[data] = found
    return found


def desired(data: bytes, spec: ZoneSpec,
            pins: Mapping[str, Sequence[str]] = EMPTY) -> bytes:
    """The Corefile ``data`` with this state's blocks as ``spec`` wants them."""
    from statekit import corefile

    cf = parsed(data)
    if spec.present:
        _refuse(cf, spec)
    owned = list(cf.owned_by(spec.owner))
    if spec.present and spec.adopt:
        owned += [b for b, _ in conflicts(cf, spec) if _adoptable(b, spec)]
        owned.sort(key=lambda b: b.start)
    targets, new = _assign(owned, spec.zone_keys if spec.present else ())
    by_key = dict(zip(spec.zone_keys, spec.zones, strict=True))
    edits = [(block, None if key is None else _owned(spec, by_key[key], pins))
             for block, key in zip(owned, targets, strict=True)]
    return corefile.rewrite(data, edits, [_owned(spec, by_key[k], pins) for k in new])


#: the host memo (``Host.recall``) of Corefiles proved to be as a state wants them
FIXED_MEMO = "corefile-desired"


def wanted_content(spec: ZoneSpec, current: ReadResult, pins: Mapping[str, Sequence[str]],
                   host: Host) -> bytes | None:
    """The Corefile read as :func:`desired` makes it for ``spec`` and ``pins``; without
    parsing it when an earlier converge of the same program proved the file already so: a
    refresh that changes nothing parses no Corefile. A file found already so is learnt,
    for the next converge. Pure inputs, pure function: the proof holds while the bytes,
    the spec, the pins and the program (code and states) are the same. None when the
    file cannot be edited (the plan says why)."""
    old = current.file
    if old is None or old.oversize or not spec.present:
        return None
    key = _fixed_key(old.content, spec, pins)
    if key in host.recall(FIXED_MEMO):
        return old.content
    try:
        content = desired(old.content, spec, pins)
    except Exception:  # a Corefile that cannot be parsed or edited: the plan says why
        return None
    if content == old.content:
        host.learn(FIXED_MEMO, key)
    return content


def _fixed_key(data: bytes, spec: ZoneSpec, pins: Mapping[str, Sequence[str]]) -> str:
    from _blake2 import blake2b  # the C module (hashlib would load OpenSSL's)

    digest = blake2b(repr((spec, sorted(pins.items()))).encode(), digest_size=20)
    digest.update(b"\0" + data)
    return digest.hexdigest()


def _owned(spec: ZoneSpec, zone: str, pins: Mapping[str, Sequence[str]]) -> bytes:
    from statekit import corefile

    return corefile.owned_text(spec.owner, render_block(spec, zone, pins.get(zone, ())))


def read_pins(source: PinSource, zones: Sequence[str], host: Host) -> dict[str, tuple[str, ...]]:
    """Each zone's pins: the destinations of the source rule's current (not in grace)
    IPv4 lines for that name in the live (or, in check mode, staged) table."""
    from statekit.netfilter import save
    from statekit.netfilter.table import name_tag
    from statekit.resources.iptables_rule import pins_of

    index = pins_of(save.load(host, source.table, "ipv4").chains.get(source.chain),
                    source.rule)
    out: dict[str, tuple[str, ...]] = {}
    for zone in zones:
        found = index.get(name_tag(source.tag, zone), {})
        out[zone] = tuple(d.removesuffix("/32") for d, gone in found.items() if gone is None)
    return out


def _refuse(cf: Corefile, spec: ZoneSpec) -> None:
    conflict = find_conflict(cf, spec)
    if conflict:
        raise ApplyError(conflict)
    if any(not b.braced for b in cf.blocks) and not cf.owned_by(spec.owner):
        raise ApplyError(f"{spec.path}: its only server block has no braces; CoreDNS allows "
                         "no other block then: add braces to it first")


def _with_pins(plan: Plan, spec: ZoneSpec, pins: Mapping[str, Sequence[str]]) -> Plan:
    """A pinned zone's plan tells its pins (the report's facts, `statekit status`)."""
    if spec.answer != "pinned":
        return plan
    return plan._replace(facts={**plan.facts, "pins": {z: list(pins.get(z, ()))
                                                       for z in spec.zones}})


def _display(content: bytes) -> str:
    return content.decode("utf-8", "replace")


class CorednsZone(Resource[ZoneSpec, ZoneCurrent]):
    type_name = "coredns_zone"
    identity_fields = frozenset({"corefile"})

    def parse(self, fields: Mapping[str, Any], meta: Meta) -> ZoneSpec:
        path = str(fields["corefile"])
        if not meta.present:
            return ZoneSpec(owner=meta.id, path=path, present=False)
        cache, reload = fields.get("cache"), fields.get("reload")
        zones = _zones(fields.get("zone"))
        return ZoneSpec(
            owner=meta.id, path=path, present=True, zones=zones, zone_keys=_zone_keys(zones),
            port=int(fields["port"]),
            bind=_binds(fields["bind"]),
            forward=tuple(parse_upstream(str(f)) for f in fields["forward"]),
            answer=_answer(fields), aaaa=str(fields["aaaa"]),
            cache=None if cache is None else int(cache), log=bool(fields["log"]),
            errors=bool(fields["errors"]), adopt=bool(fields["adopt"]),
            mode=parse_mode(fields["mode"], "mode"), uid=parse_owner(fields["owner"], "owner"),
            gid=parse_owner(fields["group"], "group", group=True), where=meta.where,
            pins_from=str(fields.get("pins_from") or ""), pin_ttl=int(fields["pin_ttl"]),
            reload=None if reload is None else int(reload),
        )

    def link(self, specs: Sequence[ZoneSpec],
             program: Mapping[str, Sequence[Any]] = EMPTY) -> list[ZoneSpec]:
        """A pinned zone learns its rule (the table, chain and tag its pins are read
        from) and runs after it and after the purged chains that write its lines."""
        rules = {r.id: r for r in program.get("iptables_rule", ())}
        out = []
        for spec in specs:
            rule = rules.get(spec.pins_from)
            if not (spec.present and spec.pins_from):
                out.append(spec)
                continue
            chains = tuple(c.id for c in program.get("iptables_chain", ())
                           if rule is not None and c.purge
                           and (c.table, c.chain) == (rule.table, rule.chain))
            source = None if rule is None or rule.template is None else PinSource(
                rule=rule.id, table=rule.table, chain=rule.chain, tag=rule.template.tag)
            out.append(spec._replace(source=source, after=(spec.pins_from, *chains)))
        return out

    def ordering(self, spec: ZoneSpec) -> Iterable[str]:
        return spec.after

    def check(self, spec: ZoneSpec,
              program: Mapping[str, Sequence[Any]] = EMPTY) -> Iterable[FieldError]:
        """A zone an earlier state serves too, in the same Corefile, on the same port
        and an overlapping address: CoreDNS would refuse to start."""
        if not spec.present:
            return
        for other in program.get(self.type_name, ()):
            if other is spec or other.owner == spec.owner:
                break  # only the states before it: the conflict is told once
            if not other.present or other.path != spec.path or other.port != spec.port \
                    or not _overlap(other.bind, spec.bind):
                continue
            for zone in sorted(set(spec.zones) & set(other.zones)):
                yield FieldError("zone", f"zone {zone} port {spec.port} is also served by "
                                 f"state {other.owner!r}{_at(other.where)}: CoreDNS would "
                                 "refuse to start (give each a different bind or port)")

    def reads(self, spec: ZoneSpec, host: Host) -> Iterable[Sequence[str]]:
        """The pins' table, when the answers are pinned (:func:`read_pins`)."""
        if spec.source is None:
            return ()
        from statekit.netfilter import save

        return save.reads(host, spec.source.table, ("ipv4",))

    def read(self, spec: ZoneSpec, host: Host) -> ZoneCurrent:
        current = read_file(host, spec.path, COREFILE_LIMIT)
        pins = EMPTY if spec.source is None else read_pins(spec.source, spec.zones, host)
        return ZoneCurrent(current, pins, wanted_content(spec, current, pins, host))

    def plan(self, spec: ZoneSpec, current: ZoneCurrent) -> Plan:
        read, old = current.file, current.file.file
        if old is None and not spec.present:
            return Plan(notes=(f"{spec.path} does not exist: no block to remove",))
        if old is not None and not spec.present and _marker(spec) not in old.content:
            return Plan(notes=(f"no block owned by {spec.owner!r}",))  # no parse needed
        from statekit import corefile

        try:
            content = current.wanted if current.wanted is not None else desired(
                old.content if old else b"", spec, current.pins)
        except corefile.CorefileError as exc:
            raise ApplyError(f"{spec.path}:{exc.line}: cannot parse the Corefile: "
                             f"{exc.message}") from None
        if old is not None and not spec.present:
            if content == old.content:
                return Plan(notes=(f"no block owned by {spec.owner!r}",))
            keep = FileSpec(path=spec.path, content=content, mode=old.mode, uid=old.uid,
                            gid=old.gid)
            return plan_file(keep, read, _display)
        target = FileSpec(path=spec.path, content=content, mode=spec.mode, uid=spec.uid,
                          gid=spec.gid)
        return _with_pins(plan_file(target, read, _display), spec, current.pins)

    def predict(self, spec: ZoneSpec, plan: Plan, host: Host) -> None:
        predict_file(plan, host)

    def apply(self, spec: ZoneSpec, plan: Plan, host: Host) -> None:
        if isinstance(plan.payload, FileSpec):
            apply_file(plan.payload, host)
