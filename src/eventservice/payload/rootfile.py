"""Low-level ROOT file checks and a fast reader for small single-basket trees.

Merging thousands of one-range files is dominated by uproot building its TTree
model for each file (milliseconds each). Per-range outputs have a simple shape —
one basket per branch — so this module reads them from the raw bytes following
the documented ROOT file format (file header, TKey, TDirectory, TBasket):
https://root.cern/doc/master/classTFile.html and ``TKey``/``TBasket``.

The fast reader is a shortcut, never the only way: it answers ``None`` whenever a
file is not exactly the simple shape (several baskets per branch, an unknown
compression, entry counts that do not add up), and the caller then reads the
file with uproot. It never guesses.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import cramjam
import numpy as np

from eventservice.payload.columns import Columns, Schema

_BYTECOUNT_MASK = 0x40000000
_BASKET = b"\x07TBasket"


class RootFormatError(ValueError):
    """The bytes are not a complete ROOT file (truncated or corrupt)."""


class _Unsupported(Exception):
    """A valid file the fast reader does not handle; the caller falls back to uproot."""


@dataclass(frozen=True)
class _Key:
    nbytes: int
    objlen: int
    keylen: int
    cycle: int
    seek: int
    classname: str
    name: str
    title: str
    end: int  # offset just after the key header's strings


def check_complete(data: bytes | memoryview, name: str) -> int:
    """Check the header and the declared length of a ROOT file; return ``fEND``."""
    if len(data) < 64 or bytes(data[:4]) != b"root":
        raise RootFormatError(f"{name} is not a ROOT file (no 'root' signature)")
    version, _begin = struct.unpack_from(">ii", data, 4)
    (end,) = struct.unpack_from(">q" if version >= 1_000_000 else ">i", data, 12)
    if len(data) < end:
        raise RootFormatError(
            f"{name} is truncated: its header says {end} bytes, the file has {len(data)}"
        )
    return int(end)


def _string(data: Any, pos: int) -> tuple[str, int]:
    length = data[pos]
    pos += 1
    if length == 255:
        (length,) = struct.unpack_from(">i", data, pos)
        pos += 4
    return bytes(data[pos : pos + length]).decode("latin-1"), pos + length


def _key(data: Any, pos: int) -> _Key:
    nbytes, version, objlen, _datime, keylen, cycle = struct.unpack_from(">ihiIhh", data, pos)
    at = pos + 18
    if version > 1000:
        seek, _pdir = struct.unpack_from(">qq", data, at)
        at += 16
    else:
        seek, _pdir = struct.unpack_from(">ii", data, at)
        at += 8
    classname, at = _string(data, at)
    name, at = _string(data, at)
    title, at = _string(data, at)
    return _Key(nbytes, objlen, keylen, cycle, seek, classname, name, title, at)


def _payload(data: Any, key: _Key, pos: int) -> bytes:
    raw = data[pos + key.keylen : pos + key.nbytes]
    if key.nbytes - key.keylen == key.objlen:
        return bytes(raw)
    out, at = [], 0
    while at < len(raw):
        header = bytes(raw[at : at + 9])
        csize = header[3] | header[4] << 8 | header[5] << 16
        block = raw[at + 9 : at + 9 + csize]
        if header[:2] == b"ZL":
            out.append(zlib.decompress(block))
        elif header[:2] == b"ZS":
            usize = header[6] | header[7] << 8 | header[8] << 16
            out.append(bytes(cramjam.zstd.decompress(bytes(block), output_len=usize)))
        elif header[:2] == b"XZ":
            out.append(lzma.decompress(block))
        else:
            raise _Unsupported(f"compression {header[:2]!r}")
        at += 9 + csize
    result = b"".join(out)
    if len(result) != key.objlen:
        raise RootFormatError(f"record {key.name!r} decompresses to a wrong size")
    return result


def _tree_entries(data: Any, tree: str, begin: int, nbytes_name: int) -> int:
    """``fEntries`` of the highest cycle of TTree ``tree`` in the top directory."""
    at = begin + nbytes_name
    (dir_version,) = struct.unpack_from(">h", data, at)
    fmt = ">qqq" if dir_version > 1000 else ">iii"
    # version, ctime, mtime, nbyteskeys, nbytesname precede the seeks
    _seekdir, _parent, seek_keys = struct.unpack_from(fmt, data, at + 18)
    keys_list = _key(data, seek_keys)
    (nkeys,) = struct.unpack_from(">i", data, seek_keys + keys_list.keylen)
    at, best = seek_keys + keys_list.keylen + 4, None
    for _ in range(nkeys):
        key = _key(data, at)
        at = key.end
        if (
            key.classname == "TTree"
            and key.name == tree
            and (best is None or key.cycle > best.cycle)
        ):
            best = key
    if best is None:
        raise _Unsupported(f"no TTree {tree!r} in the top directory")
    record = _payload(data, _key(data, best.seek), best.seek)
    at = 6  # TTree's own byte count and version
    for _base in ("TNamed", "TAttLine", "TAttFill", "TAttMarker"):
        (count,) = struct.unpack_from(">I", record, at)
        if not count & _BYTECOUNT_MASK:
            raise _Unsupported("TTree streamed without byte counts")
        at += 4 + (count & ~_BYTECOUNT_MASK)
    (entries,) = struct.unpack_from(">q", record, at)
    return int(entries)


def _find_baskets(data: bytes, view: Any, tree: str) -> dict[str, tuple[_Key, int]]:
    """Every TBasket key of ``tree``, by branch name.

    Keys are found by their class name and accepted only when the key's own
    ``fSeekKey`` equals its position, which stray bytes practically never do.
    Walking records one after the other is not an option: uproot reuses parts of
    freed space, so the bytes after a record need not start another one.
    """
    baskets: dict[str, tuple[_Key, int]] = {}
    at = data.find(_BASKET)
    while at != -1:
        for header in (34, 26):  # key header before ClassName: 64-bit or 32-bit seeks
            start = at - header
            try:
                key = _key(view, start) if start >= 0 else None
            except (struct.error, IndexError):
                key = None
            if key and key.seek == start and key.classname == "TBasket" and key.title == tree:
                if key.name in baskets:
                    raise _Unsupported(f"several baskets for {key.name}")
                baskets[key.name] = (key, start)
                break
        at = data.find(_BASKET, at + 1)
    return baskets


def read_single_basket_tree(data: bytes, tree: str, schema: Schema, name: str) -> Columns | None:
    """Columns of ``tree`` read straight from the bytes, or ``None`` to use uproot.

    Raises :class:`RootFormatError` for a file that is truncated or corrupt.
    """
    check_complete(data, name)
    view = memoryview(data)
    try:
        version, begin = struct.unpack_from(">ii", view, 4)
        (nbytes_name,) = struct.unpack_from(">i", view, 36 if version >= 1_000_000 else 28)
        entries = _tree_entries(view, tree, begin, nbytes_name)
        baskets = _find_baskets(data, view, tree)
        return _decode(view, baskets, entries, schema)
    except _Unsupported:
        return None
    except (struct.error, IndexError, UnicodeDecodeError, zlib.error, lzma.LZMAError) as exc:
        raise RootFormatError(f"{name} is corrupt: {exc}") from exc


def _basket_data(view: Any, key: _Key, pos: int) -> tuple[bytes, int]:
    """Decompressed payload and the number of entries of one basket."""
    _version, _size, _nevsize, nevbuf, last, _flag = struct.unpack_from(">hiiiib", view, key.end)
    payload = _payload(view, key, pos)
    return payload[: last - key.keylen], int(nevbuf)


def _decode(
    view: Any, baskets: dict[str, tuple[_Key, int]], entries: int, schema: Schema
) -> Columns:
    expected = set(schema.flat) | set(schema.jagged)
    expected |= {b for group in schema.jagged.values() for b in group}
    if set(baskets) != expected:
        raise _Unsupported("branches differ from the schema")
    columns = Columns({}, {}, {})
    for branch, dtype in schema.flat.items():
        columns.flat[branch] = _numbers(view, baskets[branch], dtype, entries, entries)
    for counter, group in schema.jagged.items():
        counts = _numbers(view, baskets[counter], np.dtype(np.int32), entries, entries)
        columns.counts[counter] = counts.astype(np.int64)
        total = int(counts.sum())
        columns.content[counter] = {
            b: _numbers(view, baskets[b], d, entries, total) for b, d in group.items()
        }
    return columns


def _numbers(
    view: Any, basket: tuple[_Key, int], dtype: np.dtype[Any], entries: int, items: int
) -> np.ndarray:
    payload, nevbuf = _basket_data(view, *basket)
    if nevbuf != entries or len(payload) != items * dtype.itemsize:
        raise _Unsupported(f"basket {basket[0].name} does not hold {entries} entries")
    return np.frombuffer(payload, dtype=dtype.newbyteorder(">")).astype(dtype)
