"""A `multipart/form-data` body with one file, streamed from disk in large blocks.

httpx's own multipart encoder reads a file in 64 KiB pieces and sends each as its
own write; for a 1 MB input image that is the larger part of the upload's time on
loopback. Here the body is the form fields, the file read in 1 MiB blocks (memory
stays bounded whatever the size) and the closing boundary, with its exact length
known up front (`Content-Length`, no chunked encoding: ComfyUI's aiohttp reads
either, proxies in front of it prefer a length).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Mapping

#: Bytes read from the file per write: few writes per upload, bounded memory.
BLOCK = 1024 * 1024


def _quote(value: str) -> str:
    """A header parameter value as browsers (and httpx) send it: `"`, CR and LF percent-encoded."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartFile:
    """The body of a form post with text `fields` and one file under `name`.

    The file's size is taken when the body is built; a file that changes size while it
    streams fails the request (the length would be wrong), it is never sent cut off.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str,
        *,
        filename: str,
        content_type: str,
        fields: Mapping[str, str],
    ) -> None:
        self.path = path
        self.boundary = secrets.token_hex(16)
        parts = [
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(key)}"\r\n\r\n{value}\r\n'
            for key, value in fields.items()
        ]
        parts.append(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"; '
            f'filename="{_quote(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        self.head = "".join(parts).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = os.stat(path).st_size

    def headers(self) -> dict[str, str]:
        """`Content-Type` with the boundary and the exact `Content-Length`."""
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(len(self.head) + self.size + len(self.tail)),
        }

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body: fields, the file in `BLOCK`-sized pieces, the closing boundary."""
        yield self.head
        sent = 0
        # A local file read one block at a time (page cache, sub-millisecond): no thread hop.
        with open(self.path, "rb") as handle:  # noqa: ASYNC230
            while block := handle.read(BLOCK):
                sent += len(block)
                if sent > self.size:
                    raise OSError(f"{self.path} grew while it was uploaded")
                yield block
        if sent != self.size:
            raise OSError(f"{self.path} shrank while it was uploaded ({sent} of {self.size} bytes)")
        yield self.tail
