"""Where media bytes live: a content-addressed store behind a small interface.

Files are named by the SHA-256 of their bytes, so identical uploads are kept
once and a file never changes after it is written. Every method blocks and is
called on a worker thread (``deferToThread``), never on the reactor.

:class:`LocalFileStorage` (the default) shards by the first hex digits::

    <store_path>/content/ab/cd/abcdef0123...   (the whole sha256 as the name)
    <store_path>/tmp/                          (uploads being written)

An object store (S3 and the like) implements the same :class:`StorageProvider`
protocol: ``put`` uploads the finished temporary file under its key, ``open``
returns a readable file object (a streaming body or a local cache file),
``delete`` removes the object. docs/media.md walks through it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import BinaryIO, Protocol

CHUNK = 256 * 1024


class StorageProvider(Protocol):
    def new_temp_file(self) -> tuple[BinaryIO, str]:
        """A writable file (and its path) to stream an upload into before it has a name."""

    def put(self, sha256: str, temp_path: str) -> None:
        """Adopt a finished temporary file as the content named ``sha256`` (idempotent)."""

    def open(self, sha256: str) -> BinaryIO | None:
        """The content, open for reading, or None when it is missing."""

    def delete(self, sha256: str) -> None:
        """Forget the content (a missing file is not an error)."""


class LocalFileStorage:
    """Content-addressed files on the local filesystem."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.tmp_dir = os.path.join(root, "tmp")
        os.makedirs(self.tmp_dir, exist_ok=True)

    def path_for(self, sha256: str) -> str:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return os.path.join(self.root, "content", sha256[:2], sha256[2:4], sha256)

    def new_temp_file(self) -> tuple[BinaryIO, str]:
        fd, path = tempfile.mkstemp(dir=self.tmp_dir, prefix="up-")
        return os.fdopen(fd, "w+b"), path

    def put(self, sha256: str, temp_path: str) -> None:
        dest = self.path_for(sha256)
        if os.path.exists(dest):  # already stored once: keep the old copy
            os.unlink(temp_path)
            return
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(temp_path, dest)  # atomic: readers see all of it or nothing

    def open(self, sha256: str) -> BinaryIO | None:
        try:
            return open(self.path_for(sha256), "rb")
        except (FileNotFoundError, ValueError):
            return None

    def delete(self, sha256: str) -> None:
        try:
            os.unlink(self.path_for(sha256))
        except FileNotFoundError:
            pass


def copy_hashing(src: BinaryIO, dest: BinaryIO, limit: int) -> tuple[str, int]:
    """Copy ``src`` to ``dest`` in chunks, returning (sha256 hex, size).

    Raises:
        OverflowError: more than ``limit`` bytes were read.
    """
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise OverflowError(size)
        digest.update(chunk)
        dest.write(chunk)
    dest.flush()
    return digest.hexdigest(), size
