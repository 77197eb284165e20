-- "The state at this event" is looked up by event ID alone (federation
-- /state_ids, /context, room state of a departed member): without this index
-- every such lookup scanned the whole event_state table.
CREATE INDEX event_state_by_event ON event_state (event_id);
