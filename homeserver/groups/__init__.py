"""WeChat-style groups on top of Matrix rooms (docs/groups.md).

``config`` (the ``groups:`` section), ``policy`` (the room-layer hooks:
member cap, @room, recall window), ``service`` (admins, mute, approval,
announcements, owner transfer), ``invite_codes``, ``face_to_face``
(面对面建群), ``qr`` (QR code PNGs) and ``push_rules`` (the announcement rule).
"""
