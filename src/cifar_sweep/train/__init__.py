"""Training one model: the runtime settled once, the loop, checkpoints, metrics."""
