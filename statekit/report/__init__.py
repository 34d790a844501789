"""What a converge tells: the text and JSON report, and the record of the last run."""
