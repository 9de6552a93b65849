"""Tar bundles of many small range outputs, as the pilot makes them (DESIGN §6).

Members are named by basename in a plain, uncompressed tar, so the merge job can
read them back by name. Extraction refuses anything that could write outside the
destination: absolute names, ``..`` components, links and special files.
"""

from __future__ import annotations

import os
import tarfile
import uuid
from pathlib import Path

from eventservice.errors import StorageError


class BundleError(StorageError):
    """A tar bundle cannot be made or holds a member that must not be extracted."""


def make_bundle(paths: list[Path], tar_path: Path) -> Path:
    """Write ``paths`` into the plain tar ``tar_path`` (members named by basename).

    The tar is written under a temporary name and renamed, so a crash never leaves
    a truncated bundle under ``tar_path``.
    """
    tar_path = Path(tar_path)
    names = [Path(p).name for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BundleError(f"bundle {tar_path}: duplicate member names {duplicates}")
    temporary = tar_path.with_name(f".{tar_path.name}.{uuid.uuid4().hex}.part")
    try:
        with tarfile.open(temporary, "w", format=tarfile.PAX_FORMAT, copybufsize=1 << 20) as tar:
            for path in paths:
                path = Path(path)
                if not path.is_file():
                    raise BundleError(f"bundle {tar_path}: {path} is not a regular file")
                info = tar.gettarinfo(str(path), arcname=path.name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
        os.replace(temporary, tar_path)
    except OSError as exc:
        raise BundleError(f"bundle {tar_path}: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return tar_path


def extract_bundle(tar_path: Path, dest_dir: Path) -> list[Path]:
    """Extract every member of ``tar_path`` into ``dest_dir``; return the paths, in tar order."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path, "r:") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(tar_path, member)
            extracted = []
            for member in members:
                source = tar.extractfile(member)
                assert source is not None  # regular files only, checked above
                target = dest_dir / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, open(target, "wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                extracted.append(target)
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(f"bundle {tar_path}: cannot extract: {exc}") from exc
    return extracted


def _check_member(tar_path: Path, member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith("/") or "\\" in name or Path(name).is_absolute():
        raise BundleError(f"bundle {tar_path}: member {name!r} has an absolute path")
    if any(part == ".." for part in name.split("/")):
        raise BundleError(f"bundle {tar_path}: member {name!r} escapes with '..'")
    if not member.isfile():
        raise BundleError(f"bundle {tar_path}: member {name!r} is not a regular file")
