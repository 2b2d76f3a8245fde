"""A config's checks: the structured schema, value checks, override lines, config folders."""
