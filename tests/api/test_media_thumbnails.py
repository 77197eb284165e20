"""Thumbnails: sizes and methods, EXIF rotation, animation, bad content, bombs, caching."""
from __future__ import annotations

import io

import pytest
import pytest_twisted
from PIL import Image

import support
from media_support import animated_gif, image_of, jpeg, png, raw, thumbnail, upload
from homeserver.media.config import DEFAULT_THUMBNAIL_SIZES
from homeserver.media.serving import CSP
from homeserver.media.thumbnailer import choose_size


async def _user(hs):
    c = support.Client(hs)
    await c.register("alice")
    return c


@pytest.mark.parametrize("asked, chosen", [
    ((32, 32, "crop"), (32, 32, "crop")),
    ((20, 10, "crop"), (32, 32, "crop")),
    ((33, 33, "crop"), (96, 96, "crop")),
    ((100, 100, "crop"), (320, 240, "scale")),  # bigger than any crop: never smaller than asked
    ((300, 200, "scale"), (320, 240, "scale")),
    ((640, 480, "scale"), (640, 480, "scale")),
    ((5000, 5000, "scale"), (800, 600, "scale")),
])
def test_choose_size(asked, chosen):
    assert choose_size(DEFAULT_THUMBNAIL_SIZES, *asked) == chosen


@pytest_twisted.ensureDeferred
async def test_sizes_and_methods(hs):
    c = await _user(hs)
    uri = await upload(c, png(1000, 800), "image/png", "big.png")
    cases = [
        ((32, 32, "crop"), (32, 32)),
        ((96, 96, "crop"), (96, 96)),
        ((320, 240, "scale"), (300, 240)),
        ((640, 480, "scale"), (600, 480)),
        ((800, 600, "scale"), (750, 600)),
        ((50, 50, "scale"), (300, 240)),   # smallest configured size at least as large as asked
    ]
    for (w, h, m), size in cases:
        r = await thumbnail(c, uri, w, h, m)
        assert r.code == 200, r.body[:200]
        assert r.header("Content-Type") == "image/png"
        assert r.header("Content-Security-Policy") == CSP
        assert r.header("Content-Disposition").startswith("inline")
        assert image_of(r.body).size == size, (w, h, m)
    # cached: one row per configured size, identical bytes the second time
    first = await thumbnail(c, uri, 32, 32, "crop")
    again = await thumbnail(c, uri, 30, 30, "crop")
    assert first.body == again.body
    rows = await hs.db.run(lambda txn: txn.scalar("SELECT COUNT(*) FROM media_thumbnails"))
    assert rows == 5
    # a JPEG stays a JPEG
    r = await thumbnail(c, await upload(c, jpeg(900, 900), "image/jpeg"), 96, 96, "crop")
    assert r.header("Content-Type") == "image/jpeg" and image_of(r.body).size == (96, 96)


@pytest_twisted.ensureDeferred
async def test_small_image_returns_the_original(hs):
    c = await _user(hs)
    data = png(20, 10)
    r = await thumbnail(c, await upload(c, data, "image/png"), 32, 32, "crop")
    assert r.code == 200 and r.body == data


@pytest_twisted.ensureDeferred
async def test_exif_orientation_is_honoured(hs):
    c = await _user(hs)
    # stored 1000x500 landscape, EXIF says rotate 90°: displayed 500x1000 portrait
    uri = await upload(c, jpeg(1000, 500, orientation=6), "image/jpeg")
    r = await thumbnail(c, uri, 320, 240, "scale")
    assert r.code == 200
    assert image_of(r.body).size == (120, 240)


@pytest_twisted.ensureDeferred
async def test_animated_gif(hs):
    c = await _user(hs)
    data = animated_gif(200)
    uri = await upload(c, data, "image/gif", "dance.gif")
    r = await thumbnail(c, uri, 96, 96, "crop")
    assert r.code == 200 and r.header("Content-Type") == "image/png"
    img = image_of(r.body)
    assert img.size == (96, 96) and not getattr(img, "is_animated", False)
    assert img.convert("RGB").getpixel((48, 48)) == (255, 0, 0)  # the first frame
    r = await thumbnail(c, uri, 96, 96, "crop", animated="true")
    assert r.code == 200 and r.body == data and r.header("Content-Type") == "image/gif"
    r = await thumbnail(c, uri, 96, 96, "crop", animated="false")
    assert r.header("Content-Type") == "image/png"


@pytest_twisted.ensureDeferred
async def test_cannot_thumbnail(hs):
    c = await _user(hs)
    for data, ctype in ((b"\x89PNG\r\n\x1a\n not really", "image/png"), (b"hello", "text/plain"),
                        (b"\x00" * 100, "video/mp4")):
        r = await thumbnail(c, await upload(c, data, ctype), 32, 32, "crop")
        assert r.code == 400, (ctype, r.code)
        assert r.json() == {"errcode": "M_UNKNOWN",
                            "error": "Cannot generate thumbnails for the requested content"}
    uri = await upload(c, png(), "image/png")
    for params in ({"width": -1, "height": 5}, {"width": "x", "height": 5}, {"height": 5},
                   {"width": 5, "height": 5, "method": "stretch"}, {"width": 5, "height": 5, "animated": "y"}):
        r = await raw(c, "GET", "/_matrix/client/v1/media/thumbnail/" + uri[6:], params=params)
        assert r.code == 400, params
    r = await thumbnail(c, "mxc://test.local/missing", 32, 32)
    assert r.code == 404


@pytest_twisted.ensureDeferred
async def test_decompression_bomb_is_refused(tmp_path, database_url):
    config = support.make_config(tmp_path, database_url, media={"max_image_pixels": 1_000_000})
    hs = await support.start_homeserver(config)
    try:
        c = await _user(hs)
        # 2000x2000 of one colour compresses to a few KB but would decode to 4M pixels
        out = io.BytesIO()
        Image.new("L", (2000, 2000), 0).save(out, "PNG")
        r = await thumbnail(c, await upload(c, out.getvalue(), "image/png"), 32, 32, "crop")
        assert r.code == 413 and r.json()["errcode"] == "M_TOO_LARGE"
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_legacy_thumbnail_route(hs):
    c = await _user(hs)
    uri = await upload(c, png(500, 500), "image/png")
    r = await raw(c, "GET", "/_matrix/media/v3/thumbnail/" + uri[6:], auth=False,
                  params={"width": 32, "height": 32, "method": "crop"})
    assert r.code == 200 and image_of(r.body).size == (32, 32)
