"""The MLflow store: tag names, experiments, runs and their lifecycle, lineage, bulk reads and writes."""
