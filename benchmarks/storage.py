"""Storage benchmark: our uploads against cp, xrdcp and raw boto3, in the same run.

    python benchmarks/storage.py                      # the full run (issue 5 sizes)
    python benchmarks/storage.py --quick              # a shrunken run, seconds
    python benchmarks/storage.py --small-count 500 --large-count 4 --backends file,root

For each backend on loopback (file://, s3:// on a moto server, root:// on an xrootd
server it starts) it uploads N small files and M large files and prints files/s and
MB/s for:

- large files one by one with ``StorageRouter.upload`` vs the reference tool (``cp``,
  ``xrdcp``, boto3 ``upload_file`` with its default multithreaded transfer);
- small files one by one, with ``upload_many`` (a pool of workers), and bundled into
  tars of ``--bundle`` files (tar creation included in the time) with
  ``upload_bundle`` as the pilot does (each tar streamed into the store as it is
  made) and, for comparison, the older way (``make_bundle`` to a local tar, then
  ``upload``), vs the reference copying them all in one command (``cp``/``xrdcp
  --parallel`` with many sources, boto3 ``upload_file`` per file).

Targets (issue 5): large-file ratio >= 0.7; bundling >= 5x faster than one by one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.servers import moto_process, xrootd_process  # noqa: E402

from eventservice.storage import StorageRouter, make_bundle  # noqa: E402  (after sys.path)

MB = 1_000_000
BUCKET = "bench"


@contextmanager
def moto_server() -> Iterator[str]:
    with moto_process() as endpoint:
        yield endpoint


@contextmanager
def xrootd_server() -> Iterator[tuple[int, Path]]:
    with xrootd_process("bench-xrootd-") as (port, export):
        yield port, export / "data"


def make_files(directory: Path, count: int, size: int, tag: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(tag)
    block = rng.randbytes(min(size, 1 << 20))
    paths = []
    for i in range(count):
        path = directory / f"{tag}{i:05d}.out"
        with open(path, "wb") as handle:
            left = size
            prefix = f"{tag}{i}".encode()  # every file differs
            handle.write(prefix)
            left -= len(prefix)
            while left > 0:
                handle.write(block[:left])
                left -= len(block[:left])
        paths.append(path)
    return paths


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def check(results: list[object]) -> None:
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} uploads failed, first: {failed[0]}")


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.small = make_files(work / "small", args.small_count, args.small_size, "s")
        self.large = make_files(work / "large", args.large_count, args.large_size, "l")
        self.small_bytes = args.small_count * args.small_size
        self.large_bytes = args.large_count * args.large_size
        self.work = work
        self.rows: list[dict[str, object]] = []

    def record(
        self,
        backend: str,
        what: str,
        seconds: float,
        files: int,
        size: int,
        ref: float | None = None,
    ) -> None:
        row = {
            "backend": backend,
            "what": what,
            "seconds": round(seconds, 3),
            "files_per_s": round(files / seconds, 1),
            "MB_per_s": round(size / MB / seconds, 1),
        }
        if ref is not None:
            row["ratio"] = round(ref / seconds, 2)
        self.rows.append(row)
        ratio = f"  ratio {row['ratio']:.2f}" if ref is not None else ""
        print(
            f"{backend:6} {what:34} {seconds:8.2f} s {row['files_per_s']:9.1f} files/s "
            f"{row['MB_per_s']:8.1f} MB/s{ratio}",
            flush=True,
        )

    def run(
        self,
        backend: str,
        base: str,
        options: dict,
        reference_large: Callable[[], object],
        reference_small: Callable[[], object],
        clear: Callable[[], None],
    ) -> None:
        router = StorageRouter({"es_events": [base]}, options=options)
        run = uuid.uuid4().hex[:6]

        def settle() -> None:
            clear()
            # Each timing starts with nothing left to write back: otherwise a step pays
            # for the page cache that the step before it dirtied (the kernel throttles
            # writers while it writes that back), and the order of steps decides.
            os.sync()

        settle()

        ref = timed(reference_large)
        self.record(
            backend,
            f"large: reference ({self.args.large_count})",
            ref,
            len(self.large),
            self.large_bytes,
        )
        settle()
        ours = timed(lambda: [router.upload(p, f"{run}/large/{p.name}") for p in self.large])
        self.record(
            backend, "large: StorageRouter.upload", ours, len(self.large), self.large_bytes, ref
        )
        settle()
        if backend == "file":
            fast = StorageRouter({"es_events": [base]}, options={"file://": {"fsync": False}})
            ours = timed(lambda: [fast.upload(p, f"{run}/nofsync/{p.name}") for p in self.large])
            self.record(
                backend, "large: upload, fsync off", ours, len(self.large), self.large_bytes, ref
            )
            settle()

        ref = timed(reference_small)
        self.record(
            backend,
            f"small: reference ({self.args.small_count})",
            ref,
            len(self.small),
            self.small_bytes,
        )
        settle()
        one = timed(lambda: [router.upload(p, f"{run}/one/{p.name}") for p in self.small])
        self.record(backend, "small: one by one", one, len(self.small), self.small_bytes, ref)
        settle()
        items = [(p, f"{run}/pool/{p.name}") for p in self.small]
        pool = timed(lambda: check(router.upload_many(items, workers=self.args.workers)))
        self.record(
            backend,
            f"small: upload_many({self.args.workers})",
            pool,
            len(self.small),
            self.small_bytes,
            ref,
        )
        settle()
        bundled = timed(lambda: self.bundled(router, run))
        self.record(
            backend,
            f"small: bundled by {self.args.bundle}",
            bundled,
            len(self.small),
            self.small_bytes,
            ref,
        )
        settle()
        via_tar = timed(lambda: self.bundled_via_local_tar(router, run))
        self.record(
            backend,
            f"small: by {self.args.bundle}, local tar",
            via_tar,
            len(self.small),
            self.small_bytes,
            ref,
        )
        settle()
        speedup = one / bundled
        print(
            f"{backend:6} bundling speed-up over one by one: {speedup:.1f}x (target >= 5x)",
            flush=True,
        )
        self.rows.append({"backend": backend, "what": "bundling speed-up", "x": round(speedup, 1)})

    def bundled(self, router: StorageRouter, run: str) -> None:
        """As the pilot ships: each tar made on the fly, straight into the store."""
        step = self.args.bundle
        for n, start in enumerate(range(0, len(self.small), step)):
            router.upload_bundle(self.small[start : start + step], f"{run}/bundles/{n}.tar")

    def bundled_via_local_tar(self, router: StorageRouter, run: str) -> None:
        """The way before upload_bundle: write each tar locally, upload it, delete it."""
        tars = self.work / "tars"
        tars.mkdir(exist_ok=True)
        step = self.args.bundle
        for n, start in enumerate(range(0, len(self.small), step)):
            tar = make_bundle(self.small[start : start + step], tars / f"{n}.tar")
            router.upload(tar, f"{run}/tars/{n}.tar")
            tar.unlink()


def bench_file(bench: Bench) -> None:
    dest = bench.work / "store"
    ref_dir = bench.work / "cp"

    def clear() -> None:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(ref_dir, ignore_errors=True)

    def cp_large() -> None:
        ref_dir.mkdir(parents=True, exist_ok=True)
        for p in bench.large:
            subprocess.run(["cp", str(p), str(ref_dir / p.name)], check=True)

    def cp_small() -> None:
        ref_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", *map(str, bench.small), str(ref_dir)], check=True)

    bench.run("file", f"file://{dest}", {}, cp_large, cp_small, clear)


def bench_s3(bench: Bench) -> None:
    import boto3

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with moto_server() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)

        def clear() -> None:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                for start in range(0, len(keys), 1000):
                    client.delete_objects(
                        Bucket=BUCKET, Delete={"Objects": keys[start : start + 1000]}
                    )

        def boto_large() -> None:
            for p in bench.large:
                client.upload_file(str(p), BUCKET, f"ref/{p.name}")

        def boto_small() -> None:
            for p in bench.small:
                client.upload_file(str(p), BUCKET, f"ref/{p.name}")

        options = {"s3://": {"endpoint_url": endpoint}}
        bench.run("s3", f"s3://{BUCKET}/es", options, boto_large, boto_small, clear)


def bench_root(bench: Bench) -> None:
    with xrootd_server() as (port, data):
        server = f"root://127.0.0.1:{port}/"

        def clear() -> None:
            for child in data.iterdir():
                shutil.rmtree(child, ignore_errors=True)

        def xrdcp(sources: list[Path], target: str) -> None:
            subprocess.run(
                [
                    "xrdcp",
                    "-s",
                    "-f",
                    "--parallel",
                    str(bench.args.workers),
                    *map(str, sources),
                    target,
                ],
                check=True,
            )

        def xrdcp_large() -> None:
            for p in bench.large:
                subprocess.run(
                    ["xrdcp", "-s", "-f", str(p), f"{server}/data/ref/{p.name}"], check=True
                )

        def xrdcp_small() -> None:
            subprocess.run(["xrdfs", server, "mkdir", "-p", "/data/ref"], check=True)
            xrdcp(bench.small, f"{server}/data/ref/")

        bench.run("root", f"{server}/data/es", {}, xrdcp_large, xrdcp_small, clear)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-count", type=int, default=2000)
    parser.add_argument("--small-size", type=int, default=100_000, help="bytes")
    parser.add_argument("--large-count", type=int, default=20)
    parser.add_argument("--large-size", type=int, default=100 * MB, help="bytes")
    parser.add_argument("--bundle", type=int, default=100, help="small files per tar")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--backends", default="file,s3,root")
    parser.add_argument(
        "--quick", action="store_true", help="200 small files, 3 large files of 20 MB"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.quick:
        args.small_count, args.large_count, args.large_size = 200, 3, 20 * MB

    print(
        f"# storage benchmark {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.small_count} x {args.small_size} B small, "
        f"{args.large_count} x {args.large_size} B large",
        flush=True,
    )
    runners = {"file": bench_file, "s3": bench_s3, "root": bench_root}
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as work:
        bench = Bench(args, Path(work))
        for name in args.backends.split(","):
            runners[name.strip()](bench)
    if args.json:
        args.json.write_text(json.dumps(bench.rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
