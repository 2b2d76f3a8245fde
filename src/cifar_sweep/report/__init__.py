"""Tables and figures from the store: selection, statistics, studies, writers, figures, the model registry."""
