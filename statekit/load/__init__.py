"""Loading state files: YAML, schema, templates, input checks."""
