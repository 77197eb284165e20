"""Server administration endpoints (Synapse-compatible ``/_synapse/admin`` paths, so Synapse's tools work)."""
