"""The engine: runs a loaded program (phases, order, read-plan-apply-verify) and keeps
the compiled program in its cache. Above the resources; below load/ and report/."""
