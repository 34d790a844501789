"""What the resources stand on: the machine (host), processes (runner), files, the lock."""
