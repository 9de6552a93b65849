"""EVNT inputs: generation, metadata and reading exactly one range's entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eventservice.errors import PayloadError
from eventservice.payload.inputs import (
    PARTICLE_FIELDS,
    InputFile,
    generate_event,
    make_input,
    read_input_metadata,
)


@pytest.fixture(scope="module")
def evnt(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("inputs") / "evnt.root"
    make_input(path, 25, seed=7, guid="GUID-INPUTS", first_event_number=100)
    return str(path)


def test_metadata_from_path_and_file_url(evnt: str) -> None:
    assert read_input_metadata(evnt) == ("GUID-INPUTS", 25)
    assert read_input_metadata(f"file://{evnt}") == ("GUID-INPUTS", 25)


def test_generation_depends_only_on_seed_and_event() -> None:
    a, b = generate_event(3, 17), generate_event(3, 17)
    assert all(np.array_equal(a[f], b[f]) for f in PARTICLE_FIELDS)
    assert not np.array_equal(generate_event(4, 17)["px"][:1], a["px"][:1])


def test_same_seed_same_particles_new_guid(tmp_path) -> None:
    guids = [make_input(tmp_path / f"{i}.root", 5, seed=1) for i in range(2)]
    assert guids[0] != guids[1]
    with (
        InputFile.open(str(tmp_path / "0.root")) as a,
        InputFile.open(str(tmp_path / "1.root")) as b,
    ):
        pa, pb = a.read_range(0, 4)[1], b.read_range(0, 4)[1]
        assert pa.tolist() == pb.tolist()


def test_read_range_returns_exactly_those_entries(evnt: str) -> None:
    with InputFile.open(evnt) as source:
        numbers, particles = source.read_range(5, 9)
        assert numbers.tolist() == [105, 106, 107, 108, 109]
        expected = generate_event(7, 107)
        assert np.array_equal(particles[2]["px"].to_numpy(), expected["px"])
        assert particles[2]["pdgId"].to_numpy().tolist() == expected["pdgId"].tolist()


@pytest.mark.parametrize(("first", "last"), [(20, 25), (-1, 3), (5, 4), (30, 31)])
def test_range_outside_the_file_is_refused(evnt: str, first: int, last: int) -> None:
    with InputFile.open(evnt) as source, pytest.raises(PayloadError, match="outside"):
        source.read_range(first, last)


def test_missing_file_and_corrupt_file_are_payload_errors(tmp_path, evnt: str) -> None:
    with pytest.raises(PayloadError, match="no such file"):
        InputFile.open(str(tmp_path / "absent.root"))
    corrupt = tmp_path / "corrupt.root"
    corrupt.write_bytes(b"this is not ROOT" * 100)
    with pytest.raises(PayloadError, match=r"corrupt\.root"):
        InputFile.open(str(corrupt))
    truncated = tmp_path / "truncated.root"
    data = Path(evnt).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with (
        pytest.raises(PayloadError, match=r"truncated\.root"),
        InputFile.open(str(truncated)) as source,
    ):
        source.read_range(0, 24)


def test_not_an_evnt_file(tmp_path) -> None:
    import uproot

    other = tmp_path / "other.root"
    with uproot.recreate(other) as out:
        out["something"] = "x"
    with pytest.raises(PayloadError, match="not an EVNT input"):
        InputFile.open(str(other))


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> str:
    """25 events in clusters of 10, 10 and 5 entries."""
    path = tmp_path_factory.mktemp("clusters") / "evnt.root"
    make_input(path, 25, seed=3, guid="GUID-CLUSTERS", first_event_number=1000, chunk=10)
    return str(path)


def _expected(seed: int, numbers: range) -> tuple[list[int], dict[str, np.ndarray]]:
    events = [generate_event(seed, n) for n in numbers]
    return [len(e["pdgId"]) for e in events], {
        f: np.concatenate([e[f] for e in events]) for f in PARTICLE_FIELDS
    }


@pytest.mark.parametrize(
    "ranges",
    [
        [(0, 4), (5, 9), (10, 14), (15, 19), (20, 24)],  # in order, as a consumer reads
        [(20, 24), (3, 3), (8, 12), (0, 24), (9, 10)],  # out of order, across clusters
    ],
)
def test_read_flat_serves_every_range_from_decoded_clusters(
    clustered: str, ranges: list[tuple[int, int]]
) -> None:
    with InputFile.open(clustered) as source:
        for first, last in ranges:
            numbers, counts, flat = source.read_flat(first, last)
            expected_counts, expected_flat = _expected(3, range(1000 + first, 1001 + last))
            assert numbers.tolist() == list(range(1000 + first, 1001 + last))
            assert counts.tolist() == expected_counts
            for name in PARTICLE_FIELDS:
                assert np.array_equal(flat[name], expected_flat[name]), name


def test_read_flat_keeps_the_clusters_of_the_last_range(clustered: str, monkeypatch) -> None:
    with InputFile.open(clustered) as source:
        reads: list[tuple[int, int]] = []
        read = source._read

        def counting(first: int, last: int) -> object:
            reads.append((first, last))
            return read(first, last)

        monkeypatch.setattr(source, "_read", counting)
        for first in range(0, 10, 2):
            source.read_flat(first, first + 1)
        source.read_flat(8, 11)  # crosses into the second cluster: both are decoded
        numbers, counts, flat = source.read_flat(12, 13)
        assert reads == [(0, 9), (0, 19)]
        with pytest.raises(ValueError, match="read-only"):
            flat["px"][0] = 0.0  # would change what the next range reads
        assert not numbers.flags.writeable and not counts.flags.writeable


def test_read_flat_reads_a_range_alone_in_clusters_too_large_to_keep(
    clustered: str, monkeypatch
) -> None:
    monkeypatch.setattr("eventservice.payload.inputs.MAX_CACHED_ENTRIES", 5)
    with InputFile.open(clustered) as source:
        numbers, _, _ = source.read_flat(2, 4)
        assert numbers.tolist() == [1002, 1003, 1004]
        assert source._decoded is None
        numbers, _, _ = source.read_flat(21, 23)  # the last cluster has 5 entries: kept
        assert numbers.tolist() == [1021, 1022, 1023]
        assert source._decoded is not None


@pytest.mark.parametrize(("first", "last"), [(20, 25), (-1, 3), (5, 4)])
def test_read_flat_refuses_ranges_outside_the_file(evnt: str, first: int, last: int) -> None:
    with InputFile.open(evnt) as source, pytest.raises(PayloadError, match="outside"):
        source.read_flat(first, last)
