"""Content repository: uploads, downloads, headers, ranges, legacy routes, limits, admin."""
from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted

import support
from media_support import download, jpeg, png, raw, upload, wav
from homeserver.media.serving import CSP


async def _user(hs, name="alice"):
    c = support.Client(hs)
    await c.register(name)
    return c


async def _custom_hs(tmp_path, database_url, **media):
    config = support.make_config(tmp_path, database_url, media=media)
    return await support.start_homeserver(config)


@pytest_twisted.ensureDeferred
async def test_round_trips_byte_for_byte(hs):
    c = await _user(hs)
    samples = [
        (png(), "image/png", "photo.png", "inline"),
        (jpeg(), "image/jpeg", "camera.jpg", "inline"),
        (wav(), "audio/wav", "voice note.wav", "inline"),
        (os.urandom(50_000), "video/mp4", "clip.mp4", "inline"),
        (os.urandom(3_000) + b"<html><script>", "application/pdf", "Résumé 2026.pdf", "attachment"),
        (b"<script>alert(1)</script>", "text/html", "page.html", "attachment"),
    ]
    for data, ctype, name, disposition in samples:
        uri = await upload(c, data, ctype, name)
        assert uri.startswith("mxc://test.local/")
        r = await download(c, uri)
        assert r.code == 200
        assert r.body == data
        assert r.header("Content-Type") == ctype
        assert r.header("Content-Disposition").startswith(disposition + ";")
        assert r.header("Content-Security-Policy") == CSP
        assert r.header("X-Content-Type-Options") == "nosniff"
        assert r.header("Cross-Origin-Resource-Policy") == "cross-origin"
        # the legacy route serves it too (no freeze configured), without a token
        legacy = await download(c, uri, legacy=True)
        assert legacy.code == 200 and legacy.body == data
    # RFC 5987 encoding for a non-ASCII name, plain quoted form for ASCII
    r = await download(c, await upload(c, b"x", "application/pdf", "Résumé.pdf"))
    assert r.header("Content-Disposition") == "attachment; filename*=utf-8''R%C3%A9sum%C3%A9.pdf"
    r = await download(c, await upload(c, b"x", "text/plain", "notes.txt"))
    assert r.header("Content-Disposition") == 'inline; filename="notes.txt"'
    # a filename in the path overrides the uploaded one
    uri = await upload(c, b"abc", "text/plain", "a.txt")
    r = await raw(c, "GET", "/_matrix/client/v1/media/download/" + uri[6:] + "/other.txt")
    assert r.code == 200 and r.header("Content-Disposition") == 'inline; filename="other.txt"'


@pytest_twisted.ensureDeferred
async def test_identical_uploads_are_stored_once(hs):
    c = await _user(hs)
    data = os.urandom(10_000)
    uri1, uri2 = await upload(c, data), await upload(c, data)
    assert uri1 != uri2
    sha = hashlib.sha256(data).hexdigest()
    path = os.path.join(hs.media_config.store_path, "content", sha[:2], sha[2:4], sha)
    assert open(path, "rb").read() == data
    files = [f for _d, _s, fs in os.walk(os.path.join(hs.media_config.store_path, "content")) for f in fs]
    assert files.count(sha) == 1


@pytest_twisted.ensureDeferred
async def test_large_upload_streams_through_a_file(hs):
    c = await _user(hs)
    data = os.urandom(20 << 20)
    before = dict(hs.media.stats)
    uri = await upload(c, data, "video/mp4", "big.mp4")
    assert hs.media.stats["uploads_streamed_from_file"] == before["uploads_streamed_from_file"] + 1
    assert hs.media.stats["uploads_in_memory"] == before["uploads_in_memory"]
    r = await download(c, uri)
    assert r.code == 200 and len(r.body) == len(data) and r.body == data
    assert hs.media.stats["downloads_streamed"] == before["downloads_streamed"] + 1


@pytest_twisted.ensureDeferred
async def test_range_requests(hs):
    c = await _user(hs)
    data = bytes(range(100))
    uri = await upload(c, data, "audio/ogg")
    r = await download(c, uri, headers={"Range": "bytes=10-19"})
    assert r.code == 206 and r.body == data[10:20]
    assert r.header("Content-Range") == "bytes 10-19/100"
    r = await download(c, uri, headers={"Range": "bytes=90-"})
    assert r.code == 206 and r.body == data[90:]
    r = await download(c, uri, headers={"Range": "bytes=-5"})
    assert r.code == 206 and r.body == data[95:]
    r = await download(c, uri, headers={"Range": "bytes=95-500"})
    assert r.code == 206 and r.body == data[95:] and r.header("Content-Range") == "bytes 95-99/100"
    r = await download(c, uri, headers={"Range": "bytes=100-"})
    assert r.code == 416 and r.header("Content-Range") == "bytes */100"
    r = await download(c, uri, headers={"Range": "bytes=0-1,5-6"})  # several ranges: the whole file
    assert r.code == 200 and r.body == data
    r = await raw(c, "HEAD", "/_matrix/client/v1/media/download/" + uri[6:])
    assert r.code == 200 and r.body == b"" and r.header("Accept-Ranges") == "bytes"
    # no Content-Type at upload: served as application/octet-stream, as an attachment
    r = await raw(c, "POST", "/_matrix/media/v3/upload", b"blob")
    r = await download(c, r.json()["content_uri"])
    assert r.header("Content-Type") == "application/octet-stream"
    assert r.header("Content-Disposition") == "attachment"


@pytest_twisted.ensureDeferred
async def test_authentication_and_bad_ids(hs):
    c = await _user(hs)
    uri = await upload(c, b"secret", "text/plain")
    r = await raw(c, "GET", "/_matrix/client/v1/media/download/" + uri[6:], auth=False)
    assert r.code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await raw(c, "GET", "/_matrix/client/v1/media/thumbnail/" + uri[6:], auth=False,
                  params={"width": 32, "height": 32})
    assert r.code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await raw(c, "POST", "/_matrix/media/v3/upload", b"x", auth=False)
    assert r.code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = await raw(c, "GET", "/_matrix/client/v1/media/download/test.local/nope")
    assert r.code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await raw(c, "GET", "/_matrix/client/v1/media/download/test.local/..%2F..%2Fetc")
    assert r.code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    # remote media without a federation fetcher
    r = await raw(c, "GET", "/_matrix/client/v1/media/download/other.example/abcdef")
    assert r.code == 404 and r.json()["errcode"] == "M_NOT_FOUND"


@pytest_twisted.ensureDeferred
async def test_config_endpoints(hs):
    c = await _user(hs)
    for path in ("/_matrix/client/v1/media/config", "/_matrix/media/v3/config"):
        status, body = await c.get(path)
        assert status == 200 and body == {"m.upload.size": 50 << 20}


@pytest_twisted.ensureDeferred
async def test_oversize_upload_is_413(tmp_path, database_url):
    hs = await _custom_hs(tmp_path, database_url, max_upload_size="2M")
    try:
        c = await _user(hs)
        status, body = await c.get("/_matrix/client/v1/media/config")
        assert body["m.upload.size"] == 2 << 20
        r = await raw(c, "POST", "/_matrix/media/v3/upload", os.urandom((2 << 20) + 1))
        assert r.code == 413 and r.json()["errcode"] == "M_TOO_LARGE"
        uri = await upload(c, os.urandom(2 << 20))  # exactly the limit is fine
        assert (await download(c, uri)).code == 200
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_legacy_freeze(tmp_path, database_url):
    hs = await _custom_hs(tmp_path, database_url, freeze_legacy_media=True)
    try:
        c = await _user(hs)
        uri = await upload(c, png(), "image/png")
        assert (await download(c, uri)).code == 200
        legacy = await download(c, uri, legacy=True)
        assert legacy.code == 404 and legacy.json()["errcode"] == "M_NOT_FOUND"
        r = await raw(c, "GET", "/_matrix/media/v3/thumbnail/" + uri[6:], auth=False,
                      params={"width": 32, "height": 32})
        assert r.code == 404
        # media from before the freeze stays reachable on the legacy routes
        await hs.media_store.db.run(lambda txn: txn.execute(
            "UPDATE media SET authenticated_only = ? WHERE media_id = ?", (False, uri.rsplit("/", 1)[1])))
        assert (await download(c, uri, legacy=True)).code == 200
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_async_create_and_upload(hs):
    alice, bob = await _user(hs, "alice"), await _user(hs, "bob")
    status, created = await alice.post("/_matrix/media/v1/create")
    assert status == 200 and created["content_uri"].startswith("mxc://test.local/")
    assert created["unused_expires_at"] > 0
    path = "/_matrix/media/v3/upload/" + created["content_uri"][6:]
    # not uploaded yet: the download says so rather than 404
    r = await download(alice, created["content_uri"], params={"timeout_ms": 0})
    assert r.code == 504 and r.json()["errcode"] == "M_NOT_YET_UPLOADED"
    r = await raw(bob, "PUT", path, b"hi", headers={"Content-Type": "text/plain"})
    assert r.code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await raw(alice, "PUT", path, b"hello", headers={"Content-Type": "text/plain"},
                  params={"filename": "hi.txt"})
    assert r.code == 200 and r.json() == {}
    r = await raw(alice, "PUT", path, b"again", headers={"Content-Type": "text/plain"})
    assert r.code == 409 and r.json()["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    r = await download(alice, created["content_uri"])
    assert r.code == 200 and r.body == b"hello"
    assert r.header("Content-Disposition") == 'inline; filename="hi.txt"'
    r = await raw(alice, "PUT", "/_matrix/media/v3/upload/test.local/unknownid", b"x")
    assert r.code == 404 and r.json()["errcode"] == "M_NOT_FOUND"


@pytest_twisted.ensureDeferred
async def test_download_waits_for_pending_upload(hs):
    from twisted.internet import defer
    c = await _user(hs)
    _, created = await c.post("/_matrix/media/v1/create")
    waiting = defer.ensureDeferred(download(c, created["content_uri"], params={"timeout_ms": 10000}))
    r = await raw(c, "PUT", "/_matrix/media/v3/upload/" + created["content_uri"][6:], b"late",
                  headers={"Content-Type": "text/plain"})
    assert r.code == 200
    r = await waiting
    assert r.code == 200 and r.body == b"late"


@pytest_twisted.ensureDeferred
async def test_pending_cap_and_expiry(tmp_path, database_url):
    from twisted.internet import reactor, task

    from homeserver import HomeServer
    from homeserver.util.clock import Clock

    fake = task.Clock()
    fake.advance(1_700_000_000)
    config = support.make_config(tmp_path, database_url,
                                 media={"max_pending_uploads": 2, "unused_expiration_ms": 60_000})
    hs = HomeServer(config, reactor, clock=Clock(fake))
    await hs.start()
    try:
        c = await _user(hs)
        uris = []
        for _ in range(2):
            status, body = await c.post("/_matrix/media/v1/create")
            assert status == 200
            assert body["unused_expires_at"] == 1_700_000_000_000 + 60_000
            uris.append(body["content_uri"])
        status, body = await c.post("/_matrix/media/v1/create")
        assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"
        fake.advance(61)
        r = await raw(c, "PUT", "/_matrix/media/v3/upload/" + uris[0][6:], b"too late")
        assert r.code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
        r = await download(c, uris[1], params={"timeout_ms": 0})
        assert r.code == 404
        status, body = await c.post("/_matrix/media/v1/create")  # expired IDs no longer count
        assert status == 200
        assert await hs.media.sweep_expired() == 2
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_admin_quarantine_and_delete(hs):
    admin, alice = await _user(hs, "admin"), await _user(hs, "alice")
    await hs.users.set_admin(admin.user_id, True)
    data = os.urandom(1000)
    uri = await upload(alice, data, "image/png")
    twin = await upload(alice, data, "image/png")
    media_path = uri[6:]
    r = await raw(alice, "POST", "/_synapse/admin/v1/media/quarantine/" + media_path)
    assert r.code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = await raw(admin, "POST", "/_synapse/admin/v1/media/quarantine/" + media_path)
    assert r.code == 200
    assert (await download(alice, uri)).code == 404
    assert (await download(alice, uri, legacy=True)).code == 404
    r = await raw(admin, "POST", "/_synapse/admin/v1/media/unquarantine/" + media_path)
    assert r.code == 200 and (await download(alice, uri)).code == 200

    sha = hashlib.sha256(data).hexdigest()
    stored = os.path.join(hs.media_config.store_path, "content", sha[:2], sha[2:4], sha)
    r = await raw(alice, "DELETE", "/_synapse/admin/v1/media/" + media_path)
    assert r.code == 403
    r = await raw(admin, "DELETE", "/_synapse/admin/v1/media/" + media_path)
    assert r.code == 200 and r.json() == {"deleted_media": [media_path.split("/")[1]], "total": 1}
    assert (await download(alice, uri)).code == 404
    assert os.path.exists(stored)  # still used by the twin
    assert (await download(alice, twin)).body == data
    r = await raw(admin, "DELETE", "/_synapse/admin/v1/media/" + twin[6:])
    assert r.code == 200 and not os.path.exists(stored)
    r = await raw(admin, "DELETE", "/_synapse/admin/v1/media/" + twin[6:])
    assert r.code == 404 and r.json()["errcode"] == "M_NOT_FOUND"


@pytest_twisted.ensureDeferred
async def test_url_preview_is_off_by_default(hs):
    c = await _user(hs)
    for path in ("/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url"):
        status, body = await c.get(path, params={"url": "https://example.org"})
        assert status == 404 and body["errcode"] == "M_UNRECOGNIZED"


@pytest.fixture
def local_site():
    """A tiny HTTP server on 127.0.0.1 serving a page with OpenGraph tags and an image."""
    from twisted.internet import reactor
    from twisted.web import resource, server, static, util

    root = resource.Resource()
    root.putChild(b"page", static.Data(
        b'<html><head><title>Fallback</title><meta property="og:title" content="Group photo">'
        b'<meta property="og:image" content="/pic.png"><meta name="description" content="A day out">'
        b"</head><body>hi</body></html>", "text/html; charset=utf-8"))
    root.putChild(b"pic.png", static.Data(png(40, 30), "image/png"))
    root.putChild(b"hop", util.Redirect(b"/page"))
    port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    port.stopListening()


@pytest_twisted.ensureDeferred
async def test_url_preview_refuses_loopback(tmp_path, database_url, local_site):
    hs = await _custom_hs(tmp_path, database_url, url_preview={"enabled": True, "timeout": 5})
    try:
        c = await _user(hs)
        for url in (local_site + "/page", "http://localhost:1/", "http://10.1.2.3/",
                    "http://169.254.169.254/latest/meta-data/", "http://[::1]/"):
            status, body = await c.get("/_matrix/client/v1/media/preview_url", params={"url": url})
            assert status == 403 and body["errcode"] == "M_FORBIDDEN", (url, status, body)
        status, body = await c.get("/_matrix/client/v1/media/preview_url", params={"url": "ftp://x.org/"})
        assert status == 502
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_url_preview_reads_opengraph(tmp_path, database_url, local_site):
    hs = await _custom_hs(tmp_path, database_url,
                          url_preview={"enabled": True, "ip_range_whitelist": ["127.0.0.0/8"]})
    try:
        c = await _user(hs)
        status, body = await c.get("/_matrix/client/v1/media/preview_url", params={"url": local_site + "/hop"})
        assert status == 200, body
        assert body["og:title"] == "Group photo"
        assert body["og:description"] == "A day out"
        assert body["og:image"].startswith("mxc://test.local/")
        assert body["matrix:image:size"] == len(png(40, 30))
        assert (await download(c, body["og:image"])).body == png(40, 30)
    finally:
        await hs.stop()


def test_media_config_errors():
    from homeserver.config import Config, ConfigError
    from homeserver.media.config import MediaConfig

    for media, key in [({"max_upload_size": "huge"}, "media.max_upload_size"),
                       ({"thumbnail_sizes": [[10, 10, "stretch"]]}, "media.thumbnail_sizes[0]"),
                       ({"url_preview": {"ip_range_whitelist": ["nope"]}},
                        "media.url_preview.ip_range_whitelist[0]")]:
        config = Config.from_dict({"server_name": "x", "media": media})
        with pytest.raises(ConfigError) as e:
            MediaConfig.parse(config.section("media"), config.data_dir)
        assert e.value.key == key



def test_cli_reports_media_config_errors(tmp_path):
    import subprocess
    import sys

    (tmp_path / "hs.yaml").write_text(
        "server_name: x\ndata_dir: d\nmedia:\n  max_upload_size: lots\n")
    r = subprocess.run([sys.executable, "-m", "homeserver", "-c", "hs.yaml"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("config error: media.max_upload_size:")


class _FakeFetcher:
    """Stands in for federation: serves one remote file, counts calls."""

    def __init__(self, files):
        self.files = files
        self.calls = 0

    async def fetch(self, origin, media_id, dest, max_size):
        from homeserver.api.errors import MatrixError
        from homeserver.media.service import RemoteFile

        self.calls += 1
        if media_id == "broken":
            raise RuntimeError("connection reset")
        if (origin, media_id) not in self.files:
            raise MatrixError(404, "M_NOT_FOUND", "no such media")
        data, ctype = self.files[(origin, media_id)]
        dest.write(data)
        return RemoteFile(ctype, "remote.png")


@pytest_twisted.ensureDeferred
async def test_remote_media_through_the_fetcher_hook(hs):
    c = await _user(hs)
    picture = png(400, 300)
    fetcher = _FakeFetcher({("other.example", "abcDEF"): (picture, "image/png")})
    hs.media.remote_fetcher = fetcher
    for _ in range(2):
        r = await download(c, "mxc://other.example/abcDEF")
        assert r.code == 200 and r.body == picture
        assert r.header("Content-Disposition") == 'inline; filename="remote.png"'
    assert fetcher.calls == 1  # cached after the first fetch
    r = await download(c, "mxc://other.example/abcDEF", params={"allow_remote": "false"})
    assert r.code == 200  # cached, so not remote any more
    r = await download(c, "mxc://other.example/other", params={"allow_remote": "false"})
    assert r.code == 404 and fetcher.calls == 1
    r = await raw(c, "GET", "/_matrix/client/v1/media/thumbnail/other.example/abcDEF",
                  params={"width": 32, "height": 32, "method": "crop"})
    assert r.code == 200
    r = await download(c, "mxc://other.example/missing")
    assert r.code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = await download(c, "mxc://other.example/broken")
    assert r.code == 502


@pytest_twisted.ensureDeferred
async def test_client_leaving_mid_download(hs, caplog):
    import socket

    from twisted.internet import reactor, task, threads

    c = await _user(hs)
    data = os.urandom(8 << 20)
    uri = await upload(c, data, "video/mp4")

    def leave_early():
        with socket.create_connection(("127.0.0.1", hs.ports[0])) as s:
            s.sendall(f"GET /_matrix/client/v1/media/download/{uri[6:]} HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {c.token}\r\n\r\n".encode())
            assert s.recv(65536)
    await threads.deferToThread(leave_early)
    await task.deferLater(reactor, 0.2, lambda: None)
    assert (await download(c, uri)).body == data  # still serving
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
