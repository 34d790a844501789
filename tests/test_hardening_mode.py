"""Item 7 of the hardening pass: an unquoted octal mode.

``mode: 0640`` unquoted is the YAML 1.1 integer 416; written as a mode it is 0416
(world-readable, owner write-only), and validate passed it. Every integer mode (env_file
``mode`` and ``dir_mode``, coredns_zone ``mode``; literal or from a template) is refused
with exit 3 and a message that says to quote it, and nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import statekit, write
from tests.hardening import clean

pytestmark = pytest.mark.root

ENV = """\
phases: [p]
vars: {{m: {value}}}
states:
  - id: env
    type: env_file
    phase: p
    path: /etc/app/env
    {field}: {value}
    entries: {{A: "1"}}
"""
ZONE = """\
phases: [p]
states:
  - id: dns
    type: coredns_zone
    phase: p
    corefile: /etc/coredns/Corefile
    zone: a.example.test
    bind: [127.0.0.53]
    forward: [192.0.2.53]
    mode: {value}
"""


@pytest.mark.parametrize(("field", "value", "read"), [
    ("mode", "0640", 416), ("mode", "0600", 384), ("dir_mode", "0700", 448),
    ("mode", "640", 640), ("mode", '"{{ m }}"', None),
])
def test_an_integer_mode_is_refused(tmp_path: Path, root: Path, field: str, value: str,
                                    read: int | None) -> None:
    text = ENV.format(field=field, value=value)
    if read is None:  # the template gives the var's int: 0640 -> 416
        text = text.replace("{m: \"{{ m }}\"}", "{m: 0640}")
        read = 416
    states = write(tmp_path / "s.yaml", text)
    for command in (["validate"], ["converge", "--root", str(root)]):
        run = statekit([*command, str(states)])
        clean(run, 3, f"states[env].{field}: a mode is a quoted octal string: YAML read this "
                      f"unquoted number as {read} (write mode: \"0{read:o}\"")
    assert list(root.iterdir()) == []


def test_a_coredns_zone_integer_mode_is_refused(tmp_path: Path, root: Path) -> None:
    run = statekit(["converge", "--root", str(root),
                    str(write(tmp_path / "s.yaml", ZONE.format(value="0644")))])
    clean(run, 3, "states[dns].mode: a mode is a quoted octal string", "as 420")
    assert list(root.iterdir()) == []


def test_a_quoted_mode_is_the_octal_the_user_wrote(tmp_path: Path, root: Path) -> None:
    states = write(tmp_path / "s.yaml", ENV.format(field="mode", value='"0640"')
                   .replace('{m: "0640"}', "{m: x}"))
    clean(statekit(["converge", "--root", str(root), str(states)]), 0)
    assert (root / "etc/app/env").stat().st_mode & 0o7777 == 0o640
