"""The command line's contract with scripts (SPEC.md): exit codes and the default path.

A leaf module: the command line and the subcommands both read these, so they live below
both of them.
"""

EXIT_OK, EXIT_FAILED, EXIT_CHANGED, EXIT_INVALID = 0, 1, 2, 3
#: ``converge --require-lockdown``: after the run, the lockdown is not in place
EXIT_UNLOCKED = 4
DEFAULT_PATH = "states"
