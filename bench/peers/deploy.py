"""pyinfra deploy for the benchmark: ``pyinfra @local deploy.py -y`` inside the namespace.

The work comes from the JSON file named by ``BENCH_PARAMS`` (written by bench/run.py):
one ``iptables.rule`` operation per address (TCP ACCEPT to port 443 in filter OUTPUT),
and one ``files.put`` of the 0600 env file.
"""

import json
import os
from io import StringIO

from pyinfra.operations import files, iptables  # type: ignore[import-not-found,unused-ignore]

with open(os.environ["BENCH_PARAMS"], encoding="utf-8") as params_file:
    PARAMS = json.load(params_file)

for address in PARAMS["addresses"]:
    iptables.rule(
        name=f"accept tcp/{PARAMS['port']} to {address}",
        chain=PARAMS["chain"],
        jump="ACCEPT",
        protocol="tcp",
        destination=address,
        destination_port=PARAMS["port"],
    )

files.put(
    name="env file",
    src=StringIO(PARAMS["content"]),
    dest=PARAMS["file"],
    mode="600",
)
