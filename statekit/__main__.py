"""`python -m statekit` is the `statekit` command."""

from statekit.cli import main

raise SystemExit(main())
