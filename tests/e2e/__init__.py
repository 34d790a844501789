"""End-to-end harness: the container boot, for real, in private network namespaces."""
