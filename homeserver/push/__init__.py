"""Push delivery: the WebSocket channel (and later push rules and pushers)."""
