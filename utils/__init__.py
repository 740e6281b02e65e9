"""Utilities, one concept per module: ``config`` (YAML -> typed config), ``checkpoint`` (atomic saves),
``registry`` (name lookup and argument checks for the name -> class tables)."""
