"""Push: the WebSocket channel, push rules (data and a pure evaluator), unread counts,
pushers to push gateways."""
