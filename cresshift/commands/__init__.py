"""cresshift's command modules: one click command each, registered in ``cresshift/cli.py``."""
