"""QR code PNGs for invite codes, made with the ``qrcode`` library (Pillow backend)."""
from __future__ import annotations

import io

import qrcode
from qrcode.constants import ERROR_CORRECT_M

#: Pixels per QR module and quiet-zone width in modules (the standard asks for 4).
BOX_SIZE = 8
BORDER = 4


def render_qr_png(text: str) -> bytes:
    """A PNG of the QR code carrying ``text`` (deterministic: same text, same bytes)."""
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=BOX_SIZE, border=BORDER)
    qr.add_data(text)
    qr.make(fit=True)
    image = qr.make_image(fill_color="black", back_color="white")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
