"""One module per ``cresshift`` command (each defines one click command; cli.py registers it)."""
