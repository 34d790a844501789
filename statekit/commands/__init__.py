"""The commands: what converge, validate, show, status and drops do, and the lockdown
check; called by cli.py once the arguments are parsed."""
