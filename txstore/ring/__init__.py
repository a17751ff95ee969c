"""Rings map account/container/object paths to devices; the builder makes them. Pure Python."""
