"""Bill file downloads, written under one folder (``download_dir``) and nowhere else.

The file name is the gateway's: the command's ``file_name`` (a bare name, checked when the
command is parsed) or one made of the operation and its validated arguments; the server's
``Content-Disposition`` is never used. A name is accepted only when it is a single path
component and the resolved path lies inside the folder, so no argument can climb out of it
(``../`` is refused as ``invalid``, before any request where the arguments say so).

The body is streamed into a hidden temporary file in the same folder while its SHA-256 is
computed, flushed to disk, and renamed over the final name in one step (``os.replace``): a
reader never sees half a file, and a failed or oversized download leaves nothing behind.
The result says where it landed, how big it is and its SHA-256. A small JSON answer is
handed to ``check`` before it is kept: the service reports a failure as a JSON envelope with
HTTP 200, and that must fail the download, not become the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final

import aiohttp

from gateway.schema.commands import CommandFailed, ErrorCode

#: Content types the service may answer a file with -> the extension given to it.
EXTENSIONS: Final = {
    "text/csv": ".csv",
    "application/csv": ".csv",
    "application/json": ".json",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/zip": ".zip",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
}
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
CHUNK: Final = 64 * 1024
#: A JSON answer up to this size is checked for a failure envelope (one is a few hundred bytes).
CHECKED_JSON_BYTES: Final = 1024 * 1024


def safe_name(name: str) -> str:
    """One harmless path component (letters, digits, ``._-``; no leading dot)."""
    cleaned = _UNSAFE.sub("-", name).strip(".-_") or "download"
    return cleaned.replace("..", ".")[:120]


class Downloads:
    """Writes downloads into ``folder`` (created when needed), at most ``max_bytes`` each."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def target(self, name: str) -> Path:
        """The final path of ``name``; ``invalid`` when it is not a plain name inside the
        folder."""
        if not name or name != Path(name).name or name in (".", "..") or "\\" in name:
            raise CommandFailed(ErrorCode.INVALID, f"file name {name[:80]!r} is not a plain name")
        folder = self.folder.resolve()
        path = (folder / name).resolve()
        if path.parent != folder:
            raise CommandFailed(ErrorCode.INVALID, f"file name {name[:80]!r} leaves the folder")
        return path

    async def save(
        self,
        response: aiohttp.ClientResponse,
        name: str,
        *,
        explicit: bool = False,
        check: Callable[[bytes], None] | None = None,
    ) -> dict[str, Any]:
        """Stream ``response`` to ``name`` (an ``explicit`` name is kept as it is; otherwise
        it is made safe and given the extension of the content type). ``check`` sees a JSON
        body of at most ``CHECKED_JSON_BYTES`` before it is kept, and may raise."""
        content_type = response.content_type or "application/octet-stream"
        held: bytearray | None = (
            bytearray() if check is not None and content_type.endswith("json") else None
        )
        if not explicit:
            name = safe_name(name) + EXTENSIONS.get(content_type, ".bin")
        final = self.target(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")
        digest = hashlib.sha256()
        size = 0
        try:
            out = await asyncio.to_thread(temp.open, "xb")
            try:
                async for chunk in response.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise CommandFailed(
                            ErrorCode.FAILED,
                            f"the file is larger than max_download_bytes ({self.max_bytes})",
                        )
                    digest.update(chunk)
                    if held is not None:
                        held = held + chunk if size <= CHECKED_JSON_BYTES else None
                    await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(_flush, out)
            finally:
                await asyncio.to_thread(out.close)
            if held is not None and check is not None:
                check(bytes(held))
            await asyncio.to_thread(os.replace, temp, final)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise CommandFailed(
                ErrorCode.UNAVAILABLE,
                f"the download broke off ({type(exc).__name__}); nothing was written",
                retryable=True,
            ) from None
        finally:
            temp.unlink(missing_ok=True)
        return {
            "path": str(final),
            "file_name": final.name,
            "size": size,
            "sha256": digest.hexdigest(),
            "content_type": content_type,
        }


def _flush(out: IO[bytes]) -> None:
    out.flush()
    os.fsync(out.fileno())
