"""Application services: bridges and bots (spec: application-service-api).

``registration`` (YAML files, namespaces), ``client`` (the client-server API
as services use it), ``api`` (homeserver → service HTTP calls), ``interest``,
``scheduler`` and ``store`` (durable transaction queues), ``queries``.
Wired into the homeserver only in ``homeserver/server.py``.
"""
