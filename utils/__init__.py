"""Utilities, one concept per module: ``config`` (YAML -> typed config), ``checkpoint`` (atomic saves)."""
