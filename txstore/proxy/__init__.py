"""The client-facing Swift v1 API server (`twistd proxy`)."""
