"""Hydra finds its plugins in the `hydra_plugins` namespace: this one is our Ray launcher."""
