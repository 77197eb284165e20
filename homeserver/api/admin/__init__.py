"""Server administration endpoints (Synapse-compatible /_synapse/admin paths)."""
