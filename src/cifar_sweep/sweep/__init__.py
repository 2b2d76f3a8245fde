"""A sweep as a whole: its callback and parent run, its summary for the UI, the SLURM cluster check."""
