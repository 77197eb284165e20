"""Storage: one :class:`~homeserver.storage.database.Database` and one store per concern.

Schema migrations live in ``schema/`` and are numbered by area so parallel
work never collides: 001-009 accounts, 010-019 rooms and events, 020-029
sync/receipts/account data, 030-039 media, 040-049 groups, 050-059
federation, 060-069 application services, 070-079 push.
"""
