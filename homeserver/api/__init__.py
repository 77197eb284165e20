"""HTTP APIs: the shared request machinery (``http``), client and admin endpoints."""
