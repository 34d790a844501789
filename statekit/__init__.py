"""statekit: an idempotent state engine (read, diff, apply, verify), phase by phase."""

__version__ = "0.1.0"
