"""Pieces every process shares: configuration, path hashing, timestamps."""
