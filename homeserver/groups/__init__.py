"""WeChat-style groups on top of Matrix rooms (docs/groups.md).

``config`` (the ``groups:`` section), ``policy`` (the room-layer hooks:
member cap, @room, recall window), ``service`` (invite codes, admins, mute,
approval, announcements, owner transfer), ``face_to_face`` (面对面建群) and
``qr`` (QR code PNGs).
"""
