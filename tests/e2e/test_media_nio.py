"""matrix-nio, unmodified, uploads, downloads and thumbnails media over a real port."""
from __future__ import annotations

import io

import pytest_twisted
from nio import AsyncClient, MemoryDownloadResponse, ThumbnailResponse, UploadResponse
from nio.api import ResizingMethod

import support
from media_support import image_of, png, wav


@pytest_twisted.ensureDeferred
async def test_nio_upload_download_thumbnail(hs):
    account = support.Client(hs)
    await account.register("nio_user")
    client = AsyncClient(support.base_url(hs), account.user_id)
    client.access_token, client.user_id, client.device_id = account.token, account.user_id, account.device_id
    try:
        picture = png(900, 600)
        resp, _keys = await support.aio(client.upload(io.BytesIO(picture), "image/png", "holiday.png",
                                                      filesize=len(picture)))
        assert isinstance(resp, UploadResponse), resp
        server_name, media_id = resp.content_uri[len("mxc://"):].split("/")

        got = await support.aio(client.download(resp.content_uri))
        assert isinstance(got, MemoryDownloadResponse), got
        assert got.body == picture and got.content_type == "image/png"
        assert got.filename == "holiday.png"

        thumb = await support.aio(client.thumbnail(server_name, media_id, 96, 96, ResizingMethod.crop))
        assert isinstance(thumb, ThumbnailResponse), thumb
        assert image_of(thumb.body).size == (96, 96)

        voice = wav()
        resp, _keys = await support.aio(client.upload(io.BytesIO(voice), "audio/wav", "note.wav",
                                                      filesize=len(voice)))
        assert isinstance(resp, UploadResponse), resp
        got = await support.aio(client.download(resp.content_uri))
        assert got.body == voice
    finally:
        await support.aio(client.close())
