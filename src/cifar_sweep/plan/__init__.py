"""What a job is and will do before it runs: identity, code version, decision; a sweep planned
in bulk, and whether its files fit."""
