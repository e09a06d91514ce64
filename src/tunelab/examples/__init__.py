"""Bundled example datasets (and the code that generated them)."""
