"""Hydra finds its plugins in the `hydra_plugins` namespace: this one is the sweeper of `-m`."""
