"""What statekit prints: the report and the masking of secrets."""
