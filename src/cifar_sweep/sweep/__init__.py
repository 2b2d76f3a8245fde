"""A sweep as a whole: its callback and parent run, free disk space, the SLURM cluster check."""
