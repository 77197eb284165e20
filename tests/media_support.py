"""Helpers for the media tests: real files, raw HTTP with headers, custom homeservers."""
from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Any

import treq
from PIL import Image

import support


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def jpeg(width: int = 64, height: int = 48, orientation: int | None = None) -> bytes:
    img = Image.new("RGB", (width, height), (20, 120, 220))
    out = io.BytesIO()
    if orientation is None:
        img.save(out, "JPEG")
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def wav(frames: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(range(256)) * (frames * 2 // 256))
    return out.getvalue()


def animated_gif(size: int = 200) -> bytes:
    frames = [Image.new("RGB", (size, size), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


@dataclass
class Raw:
    code: int
    headers: Any
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[-1] if values else None

    def json(self) -> Any:
        import json
        return json.loads(self.body)


async def raw(client: support.Client, method: str, path: str, data: bytes | None = None,
              token: str | None = None, headers: dict[str, str] | None = None,
              params: dict[str, Any] | None = None, auth: bool = True) -> Raw:
    hdrs: dict[str, list[str]] = {}
    tok = token if token is not None else client.token
    if auth and tok:
        hdrs["Authorization"] = [f"Bearer {tok}"]
    for k, v in (headers or {}).items():
        hdrs[k] = [v]
    resp = await treq.request(method, client.base + path, data=data, headers=hdrs, params=params)
    return Raw(resp.code, resp.headers, await resp.content())


async def upload(client: support.Client, data: bytes, content_type: str = "application/octet-stream",
                 filename: str | None = None) -> str:
    params = {"filename": filename} if filename else None
    r = await raw(client, "POST", "/_matrix/media/v3/upload", data,
                  headers={"Content-Type": content_type}, params=params)
    assert r.code == 200, (r.code, r.body[:200])
    uri = r.json()["content_uri"]
    assert uri.startswith("mxc://")
    return uri


def mxc_path(uri: str) -> str:
    return uri[len("mxc://"):]


async def download(client: support.Client, uri: str, legacy: bool = False, **kw: Any) -> Raw:
    prefix = "/_matrix/media/v3/download/" if legacy else "/_matrix/client/v1/media/download/"
    return await raw(client, "GET", prefix + mxc_path(uri), auth=not legacy, **kw)


async def thumbnail(client: support.Client, uri: str, width: int, height: int, method: str = "scale",
                    **extra: Any) -> Raw:
    params = {"width": width, "height": height, "method": method, **extra}
    return await raw(client, "GET", "/_matrix/client/v1/media/thumbnail/" + mxc_path(uri), params=params)


def image_of(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))
