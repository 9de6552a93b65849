"""s3:// endpoints through s3fs.

S3 has no rename, but it has the equivalent commit: an object becomes visible only
when its ``PutObject`` or ``CompleteMultipartUpload`` succeeds, never half written.
Small files go in one ``PutObject`` carrying ``Content-MD5``, so the server itself
refuses corrupted bytes. Larger files go as a multipart upload: the parts live under
the upload ID (the temporary name) until the commit; each part's ETag (its MD5) is
checked before committing, a failure aborts the upload, and afterwards the object's
size and composite ETag are checked. Parts are sent a few at a time while the next
one is read, hashed and adler32-summed in the calling thread.

This module uses s3fs's ``_call_s3`` coroutine (request signing, endpoint, error
translation) rather than a second boto3 client.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
from typing import Any

from fsspec.asyn import sync

from eventservice.errors import ChecksumMismatch
from eventservice.storage.checksum import Adler32
from eventservice.storage.endpoint import FsspecEndpoint, Source

DEFAULT_PART_SIZE = 16 << 20
DEFAULT_CONCURRENCY = 4


def _md5(data: bytes) -> Any:
    return hashlib.md5(data, usedforsecurity=False)


def _digest(data: bytes) -> bytes:
    return bytes(_md5(data).digest())


class S3Endpoint(FsspecEndpoint):
    """``s3://bucket/prefix``; options are s3fs's plus ``part_size`` and ``concurrency``."""

    def __init__(self, base: str, options: dict[str, Any]) -> None:
        self.part_size = max(5 << 20, int(options.get("part_size", DEFAULT_PART_SIZE)))
        self.concurrency = max(1, int(options.get("concurrency", DEFAULT_CONCURRENCY)))
        super().__init__(base, options)

    def _call(self, method: str, **kwargs: Any) -> Any:
        return sync(self.fs.loop, self.fs._call_s3, method, **kwargs)

    def _put(self, source: Source, url: str) -> tuple[int, str]:
        bucket, key, _ = self.fs.split_path(self.path(url))
        first = source.read(self.part_size)
        if len(first) < self.part_size:
            size, adler32, etag = self._put_single(first, bucket, key, url)
        else:
            size, adler32, etag = self._put_multipart(first, source, bucket, key, url)
        try:
            self._check_stored(url, size, etag)
        except ChecksumMismatch:
            # Committed but wrong (a store that does not check Content-MD5): take it
            # away so that no reader finds bad bytes under the final name.
            self._remove_quietly(self.path(url))
            raise
        return size, adler32

    def _check_stored(self, url: str, size: int, etag: str) -> None:
        self.fs.invalidate_cache(self.path(url))
        info = self.fs.info(self.path(url))
        if int(info["size"]) != size:
            raise ChecksumMismatch(f"{url}: stored size {info['size']} differs from {size} sent")
        stored_etag = str(info.get("ETag", "")).strip('"')
        if stored_etag and stored_etag != etag:
            raise ChecksumMismatch(f"{url}: stored ETag (MD5) {stored_etag} differs from {etag}")

    def _put_single(self, data: bytes, bucket: str, key: str, url: str) -> tuple[int, str, str]:
        running = Adler32()
        running.update(data)
        digest = _md5(data)
        answer = self._call(
            "put_object",
            Bucket=bucket,
            Key=key,
            Body=data,
            ContentMD5=base64.b64encode(digest.digest()).decode("ascii"),
        )
        etag = str(answer.get("ETag", "")).strip('"')
        if etag and etag != digest.hexdigest():
            self._remove_quietly(self.path(url))
            raise ChecksumMismatch(
                f"{url}: server ETag (MD5) {etag} differs from {digest.hexdigest()}"
            )
        return running.size, running.hexdigest(), digest.hexdigest()

    def _put_multipart(
        self, first: bytes, source: Source, bucket: str, key: str, url: str
    ) -> tuple[int, str, str]:
        upload_id = self._call("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
        running = Adler32()
        sent: list[tuple[int, concurrent.futures.Future[Any], concurrent.futures.Future[Any]]] = []
        # MD5s are computed beside the transfer (hashlib releases the GIL), so
        # hashing does not hold back reading and sending the next part.
        hashing = concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            chunk, number = first, 0
            while chunk:
                number += 1
                running.update(chunk)
                in_flight = [future for _, _, future in sent if not future.done()]
                if len(in_flight) >= self.concurrency:
                    concurrent.futures.wait(
                        in_flight, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                coroutine = self.fs._call_s3(
                    "upload_part",
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                )
                future = _submit(coroutine, self.fs.loop)
                sent.append((number, hashing.submit(_digest, chunk), future))
                chunk = source.read(self.part_size)
            parts, digests = [], []
            for number, digest, future in sent:
                etag = str(future.result()["ETag"])
                digests.append(digest.result())
                if etag.strip('"') != digests[-1].hex():
                    raise ChecksumMismatch(f"{url}: part {number} ETag {etag} is not its MD5")
                parts.append({"PartNumber": number, "ETag": etag})
            self._call(
                "complete_multipart_upload",
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            for _, _, future in sent:
                future.cancel()
            self._abort_quietly(bucket, key, upload_id)
            raise
        finally:
            hashing.shutdown(wait=False, cancel_futures=True)
        composite = _md5(b"".join(digests)).hexdigest()
        return running.size, running.hexdigest(), f"{composite}-{len(sent)}"

    def _abort_quietly(self, bucket: str, key: str, upload_id: str) -> None:
        # The upload failed already; the abort is best effort.
        with contextlib.suppress(Exception):
            self._call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)


def _submit(coroutine: Any, loop: Any) -> concurrent.futures.Future[Any]:
    return asyncio.run_coroutine_threadsafe(coroutine, loop)
