"""Rooms (groups): orchestration with I/O, one verb per file.

``create``, ``send`` (with ``builder`` and ``content``), ``membership``,
``redact``, ``persist``, ``history`` (reads), ``visibility``, ``relations``,
``directory``, ``format``; ``state_cache`` keeps rooms in memory and
``stream`` publishes persisted events. See docs/rooms.md.
"""
