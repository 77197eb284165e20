"""QR code PNGs for invite codes, made with the ``qrcode`` library (Pillow backend)."""
from __future__ import annotations

import io
from collections import OrderedDict
from typing import Awaitable, Callable

#: Pixels per QR module and quiet-zone width in modules (the standard asks for 4).
BOX_SIZE = 8
BORDER = 4


def render_qr_png(text: str) -> bytes:
    """A PNG of the QR code carrying ``text`` (deterministic: same text, same bytes)."""
    # qrcode and Pillow cost about 4 MB resident: loaded by the first QR code, not at start.
    import qrcode
    from qrcode.constants import ERROR_CORRECT_M

    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=BOX_SIZE, border=BORDER)
    qr.add_data(text)
    qr.make(fit=True)
    image = qr.make_image(fill_color="black", back_color="white")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class QrRenderer:
    """Renders QR PNGs off the reactor thread (about 30-40 ms of CPU each) and keeps the latest ones.

    Args:
        run_in_thread: e.g. ``twisted.internet.threads.deferToThread``.
        cache_size: how many PNGs are kept (a code's image never changes).
    """

    def __init__(self, run_in_thread: Callable[..., Awaitable[bytes]], cache_size: int = 256) -> None:
        self._run = run_in_thread
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._size = cache_size

    async def png(self, text: str) -> bytes:
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        data = await self._run(render_qr_png, text)
        self._cache[text] = data
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return data
