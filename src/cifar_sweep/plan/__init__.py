"""What a job is and will do before it runs: identity, code version, decision; sweeps planned in bulk."""
