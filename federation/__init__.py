"""The Matrix server-server API: keys, discovery, signed transport, inbound checks, sender.

``homeserver/`` never imports this package except in ``homeserver/server.py``,
the composition root, which builds :class:`federation.service.Federation`
and plugs it into the homeserver's hooks.
"""
