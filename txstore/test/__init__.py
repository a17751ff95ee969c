"""Tests for txstore (run with trial)."""
