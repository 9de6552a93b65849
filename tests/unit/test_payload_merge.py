"""Merge: ordering, tars, duplicates, missing events, checksums, damaged files."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import uproot

from eventservice.errors import MergeError
from eventservice.payload.columns import Columns, Schema
from eventservice.payload.inputs import make_input
from eventservice.payload.merge import adler32_hex, merge_outputs
from eventservice.payload.rootfile import read_single_basket_tree
from eventservice.payload.simulate import Simulator

GUID = "GUID-MERGE"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """Per-range outputs of 4 ranges covering events 0-11, by first event."""
    workdir = tmp_path_factory.mktemp("merge")
    evnt = workdir / "evnt.root"
    make_input(evnt, 12, seed=5, guid=GUID)
    simulator = Simulator(cpu_per_event=0.0, workdir=str(workdir))
    paths = {}
    for start in (0, 3, 6, 9):
        event_range = {
            "eventRangeID": f"7-8-1-{start}-1",
            "startEvent": start,
            "lastEvent": start + 2,
            "LFN": str(evnt),
            "GUID": GUID,
        }
        paths[start] = simulator.process_range(event_range)[0]
    return paths


def numbers(path: str) -> list[int]:
    with uproot.open(path) as out:
        return out["hits"]["eventNumber"].array().tolist()


def test_merge_orders_by_event_number(outputs: dict[int, str], tmp_path) -> None:
    result = merge_outputs(
        [outputs[9], outputs[0], outputs[6], outputs[3]], str(tmp_path / "m.root")
    )
    assert (result.n_events, result.n_files, result.first_event, result.last_event) == (
        12,
        4,
        0,
        11,
    )
    assert numbers(result.path) == list(range(12))
    with uproot.open(result.path) as out:
        assert str(out["inputGUID"]) == GUID
        merged = out["hits"].arrays()
    with uproot.open(outputs[3]) as out:
        part = out["hits"].arrays()
    assert merged[3:6].tolist() == part.tolist()


def test_inputs_may_have_any_name_and_come_in_tars(outputs: dict[int, str], tmp_path) -> None:
    renamed = tmp_path / "whatever-name"
    renamed.write_bytes(Path(outputs[0]).read_bytes())
    bundle = tmp_path / "bundle.tar"
    with tarfile.open(bundle, "w") as tar:
        for start in (3, 6):
            tar.add(outputs[start], arcname=f"7-8-1-{start}-1.HITS.root")
    result = merge_outputs([str(bundle), str(renamed), outputs[9]], str(tmp_path / "m.root"))
    assert numbers(result.path) == list(range(12))


def test_duplicates_are_refused_naming_both_files(outputs: dict[int, str], tmp_path) -> None:
    copy = tmp_path / "7-8-1-3-2.HITS.root"
    copy.write_bytes(Path(outputs[3]).read_bytes())
    with pytest.raises(MergeError, match="duplicate") as caught:
        merge_outputs([outputs[0], outputs[3], str(copy)], str(tmp_path / "m.root"))
    assert outputs[3] in str(caught.value) and str(copy) in str(caught.value)
    assert not (tmp_path / "m.root").exists()


def test_missing_events_are_named(outputs: dict[int, str], tmp_path) -> None:
    with pytest.raises(MergeError, match=r"missing 3 events: 3-5"):
        merge_outputs(
            [outputs[0], outputs[6], outputs[9]], str(tmp_path / "m.root"), expect=(0, 11)
        )
    assert not os.path.exists(tmp_path / "m.root")
    with pytest.raises(MergeError, match="outside 0-5"):
        merge_outputs([outputs[0], outputs[6]], str(tmp_path / "m.root"), expect=(0, 5))


def test_range_ids_select_files_and_name_absent_ones(outputs: dict[int, str], tmp_path) -> None:
    bundle = tmp_path / "b.tar"
    with tarfile.open(bundle, "w") as tar:
        for start in (0, 3):
            tar.add(outputs[start], arcname=f"7-8-1-{start}-1.HITS.root")
    late = tmp_path / "7-8-1-0-2.HITS.root"  # a refused late attempt
    late.write_bytes(Path(outputs[0]).read_bytes())
    result = merge_outputs(
        [str(bundle), str(late)], str(tmp_path / "m.root"), range_ids={"7-8-1-0-1", "7-8-1-3-1"}
    )
    assert numbers(result.path) == list(range(6))
    with pytest.raises(MergeError, match="no output found for ranges 7-8-1-6-1"):
        merge_outputs([str(bundle)], str(tmp_path / "n.root"), range_ids={"7-8-1-0-1", "7-8-1-6-1"})


def test_bad_checksum_names_the_file_and_writes_nothing(outputs: dict[int, str], tmp_path) -> None:
    good = adler32_hex(Path(outputs[0]).read_bytes())
    sums = {outputs[0]: f"ad:{good}", os.path.basename(outputs[3]): "00000001"}
    out = tmp_path / "m.root"
    with pytest.raises(
        MergeError, match=rf"{outputs[3]} has adler32 [0-9a-f]{{8}}, expected 00000001"
    ):
        merge_outputs([outputs[0], outputs[3]], str(out), checksums=sums)
    assert not out.exists() and not list(tmp_path.iterdir())
    sums[os.path.basename(outputs[3])] = adler32_hex(Path(outputs[3]).read_bytes())
    assert merge_outputs([outputs[0], outputs[3]], str(out), checksums=sums).n_events == 6


def test_truncated_or_corrupt_input_names_the_file(outputs: dict[int, str], tmp_path) -> None:
    data = Path(outputs[3]).read_bytes()
    truncated = tmp_path / "7-8-1-3-1.HITS.root"
    truncated.write_bytes(data[: len(data) - 100])
    with pytest.raises(MergeError, match=rf"{truncated} is truncated"):
        merge_outputs([outputs[0], str(truncated)], str(tmp_path / "m.root"))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\0" * 1000)
    with pytest.raises(MergeError, match=rf"{garbage} is neither a ROOT file nor a tar"):
        merge_outputs([outputs[0], str(garbage)], str(tmp_path / "m.root"))
    garbage.write_bytes(b"garbage!" * 200)
    with pytest.raises(MergeError, match=rf"{garbage} is neither a ROOT file nor a tar"):
        merge_outputs([outputs[0], str(garbage)], str(tmp_path / "m.root"))
    with pytest.raises(MergeError, match="cannot read"):
        merge_outputs([str(tmp_path / "absent")], str(tmp_path / "m.root"))
    assert not (tmp_path / "m.root").exists()


def test_corrupt_tar_member_names_the_member(outputs: dict[int, str], tmp_path) -> None:
    bundle = tmp_path / "b.tar"
    data = Path(outputs[3]).read_bytes()
    with tarfile.open(bundle, "w") as tar:
        info = tarfile.TarInfo("7-8-1-3-1.HITS.root")
        info.size = len(data) // 2
        tar.addfile(info, io.BytesIO(data[: len(data) // 2]))
    with pytest.raises(MergeError, match=r"b\.tar\[7-8-1-3-1\.HITS\.root\] is truncated"):
        merge_outputs([outputs[0], str(bundle)], str(tmp_path / "m.root"))


def test_different_schema_is_refused(outputs: dict[int, str], tmp_path) -> None:
    other = tmp_path / "other.root"
    with uproot.recreate(other) as out:
        out.mktree("hits", {"eventNumber": np.int64}).extend({"eventNumber": np.array([50])})
    with pytest.raises(MergeError, match="has branches"):
        merge_outputs([outputs[0], str(other)], str(tmp_path / "m.root"))


def test_fast_reader_equals_uproot(outputs: dict[int, str]) -> None:
    for path in outputs.values():
        with uproot.open(path) as handle:
            schema = Schema.of_tree(handle["hits"])
            slow = Columns.from_arrays(handle["hits"].arrays(), schema)
        fast = read_single_basket_tree(Path(path).read_bytes(), "hits", schema, path)
        assert fast is not None
        for name in slow.flat:
            assert np.array_equal(fast.flat[name], slow.flat[name])
        for counter, group in slow.content.items():
            assert np.array_equal(fast.counts[counter], slow.counts[counter])
            for name in group:
                assert fast.content[counter][name].tobytes() == group[name].tobytes()


def _compressible_columns(n: int = 2000) -> Columns:
    counts = np.arange(n, dtype=np.int64) % 3
    return Columns(
        {"eventNumber": np.arange(n, dtype=np.int64)},
        {"nhit": counts},
        {"nhit": {"hit_x": np.repeat(np.arange(n, dtype=np.float64), counts)}},
    )


@pytest.mark.parametrize(
    ("compression", "fast"),
    [
        (uproot.ZLIB(1), True),
        (uproot.ZSTD(1), True),
        (uproot.LZMA(1), True),
        (uproot.LZ4(1), False),
    ],
)
def test_fast_reader_decompresses_zlib_zstd_lzma_and_declines_the_rest(
    tmp_path, compression: uproot.compression.Compression, fast: bool
) -> None:
    path = tmp_path / "compressed.root"
    written = _compressible_columns()
    with uproot.recreate(path, compression=compression) as out:
        written.write(out, "hits")
    with uproot.open(path) as handle:  # the baskets really are compressed
        branch = handle["hits"]["hit_x"]
        assert branch.compressed_bytes < branch.uncompressed_bytes
    schema = Schema({"eventNumber": np.dtype(np.int64)}, {"nhit": {"hit_x": np.dtype(np.float64)}})
    read = read_single_basket_tree(path.read_bytes(), "hits", schema, str(path))
    if not fast:
        assert read is None
    else:
        assert read is not None
        assert np.array_equal(read.flat["eventNumber"], written.flat["eventNumber"])
        assert np.array_equal(read.counts["nhit"], written.counts["nhit"])
        assert read.content["nhit"]["hit_x"].tobytes() == written.content["nhit"]["hit_x"].tobytes()
    merged = merge_outputs([str(path)], str(tmp_path / "m.root"))
    assert numbers(merged.path) == list(range(2000))


def test_outputs_are_written_with_zstd(outputs: dict[int, str]) -> None:
    with uproot.open(outputs[0]) as out:
        assert isinstance(out.file.compression, uproot.ZSTD)


def test_fast_reader_declines_several_baskets(tmp_path) -> None:
    path = tmp_path / "two.root"
    with uproot.recreate(path) as out:
        tree = out.mktree("hits", {"eventNumber": np.int64})
        tree.extend({"eventNumber": np.array([1, 2])})
        tree.extend({"eventNumber": np.array([3])})
    schema = Schema({"eventNumber": np.dtype(np.int64)}, {})
    assert read_single_basket_tree(path.read_bytes(), "hits", schema, str(path)) is None
    result = merge_outputs([str(path)], str(tmp_path / "m.root"))
    assert numbers(result.path) == [1, 2, 3]


def test_checksums_file_is_json(tmp_path) -> None:
    from eventservice.payload.merge import load_checksums

    good = tmp_path / "sums.json"
    good.write_text(json.dumps({"a": "0000ffff"}))
    assert load_checksums(str(good)) == {"a": "0000ffff"}
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    with pytest.raises(MergeError, match="JSON object"):
        load_checksums(str(bad))
