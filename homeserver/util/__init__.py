"""Small helpers shared across the homeserver (clock, ids, JSON)."""
