"""root:// endpoints through fsspec-xrootd and the XRootD client.

The object is written as a hidden ``.part`` file beside its final name, checked,
and renamed with the server's ``mv``. The server computes adler32 itself when it is
configured with ``xrootd.chksum adler32``: the checksum is then compared before the
rename, so a corrupted object never appears under its final name. Servers that do
not offer checksums are checked by size only (``verify_checksum: false`` skips the
query even where it is offered).
"""

from __future__ import annotations

from typing import Any

from eventservice.errors import ChecksumMismatch
from eventservice.storage.endpoint import FsspecEndpoint

#: Server answers that mean "this server computes no checksums", not "your data is bad".
_NOT_OFFERED = ("[3013]", "not supported", "not configured", "unsupported")


class XRootDEndpoint(FsspecEndpoint):
    """``root://host:port//path``; options are fsspec-xrootd's (``timeout``) and ours."""

    def __init__(self, base: str, options: dict[str, Any]) -> None:
        super().__init__(base, options)
        self.verify_checksum = bool(self.options.get("verify_checksum", True))

    def _verify(self, path: str, url: str, size: int, adler32: str) -> None:
        super()._verify(path, url, size, adler32)
        if not self.verify_checksum:
            return
        stored = self.server_adler32(path)
        if stored is not None and stored != adler32:
            raise ChecksumMismatch(f"{url}: server adler32 {stored} differs from {adler32} sent")

    def server_adler32(self, path: str) -> str | None:
        """The server's adler32 of ``path``, or None when this server offers no checksums."""
        try:
            algorithm, value = self.fs.checksum(path)
        except OSError as exc:
            if any(marker in str(exc) for marker in _NOT_OFFERED):
                self.verify_checksum = False
                return None
            raise
        if algorithm.lower() != "adler32":
            return None
        return value.lower().rjust(8, "0")
