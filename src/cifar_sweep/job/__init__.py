"""One job from its config to its ended run: the steps, what happens each epoch, the wrap-up, how it ends."""
