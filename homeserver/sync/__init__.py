"""Realtime delivery: stream tokens, the notifier and the /sync builder."""
