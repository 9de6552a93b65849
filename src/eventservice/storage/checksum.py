"""Adler-32 checksums as the dispatcher records them: 8 lowercase hex digits."""

from __future__ import annotations

import os
import re
import zlib

from eventservice.errors import InvalidInput

CHUNK = 4 << 20
_HEX8 = re.compile(r"^[0-9a-f]{8}$")


class Adler32:
    """A running Adler-32, fed chunk by chunk while the bytes stream past."""

    def __init__(self) -> None:
        self.value = 1
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.value = zlib.adler32(data, self.value)
        self.size += len(data)

    def hexdigest(self) -> str:
        return format(self.value & 0xFFFFFFFF, "08x")


def adler32_bytes(data: bytes | bytearray | memoryview) -> str:
    """Adler-32 of a bytes-like object, 8 lowercase hex digits."""
    return format(zlib.adler32(data) & 0xFFFFFFFF, "08x")


def adler32_file(path: str | os.PathLike[str]) -> str:
    """Adler-32 of a local file's content, 8 lowercase hex digits."""
    running = Adler32()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            running.update(chunk)
    return running.hexdigest()


def normalize_adler32(value: str) -> str:
    """Accept ``"ad:0a1b2c3d"`` or any case and zero-padding; return 8 lowercase hex digits."""
    text = value.strip().lower()
    if text.startswith("ad:"):
        text = text[3:]
    if text.startswith("0x"):
        text = text[2:]
    text = text.rjust(8, "0")
    if not _HEX8.match(text):
        raise InvalidInput(f"adler32 {value!r} is not 8 hex digits")
    return text
