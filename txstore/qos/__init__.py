"""Bandwidth differentiation: IO classes, the per-device scheduler, and the load the nodes report."""
