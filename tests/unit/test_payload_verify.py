"""verify: identical files pass; any difference is reported readably."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from eventservice.payload.columns import Columns, write_tree_file
from eventservice.payload.verify import VerifyError, verify_files


def write(path, numbers, edep, hits_x, extra: bool = False) -> str:
    counts = np.array([len(h) for h in hits_x], dtype=np.int64)
    flat = {"eventNumber": np.array(numbers, dtype=np.int64), "edepTotal": np.array(edep)}
    if extra:
        flat["other"] = np.zeros(len(numbers))
    x = np.concatenate([np.array(h, dtype=np.float64) for h in hits_x])
    columns = Columns(flat, {"nhit": counts}, {"nhit": {"hit_x": x}})
    return write_tree_file(path, "hits", columns)


def test_identical_files(tmp_path) -> None:
    a = write(tmp_path / "a.root", [1, 2], [0.5, 1.5], [[1.0], [2.0, 3.0]])
    b = write(tmp_path / "b.root", [1, 2], [0.5, 1.5], [[1.0], [2.0, 3.0]])
    report = verify_files(a, b)
    assert report.identical
    assert report.summary() == "identical: tree 'hits', 2 events, 4 branches"


def test_value_and_length_differences_name_the_event(tmp_path) -> None:
    ref = write(tmp_path / "r.root", [1, 2, 3], [0.5, 1.5, 2.5], [[1.0], [2.0, 3.0], [4.0]])
    cand = write(tmp_path / "c.root", [1, 2, 3], [0.5, 1.5, 2.5], [[1.0], [2.0, 3.5], [4.0, 5.0]])
    report = verify_files(cand, ref)
    assert not report.identical
    text = report.summary()
    assert "branch hit_x: 2 of 3 events differ; first at eventNumber 2 (entry 1)" in text
    assert "[2.0, 3.5] vs reference [2.0, 3.0]" in text
    assert "branch nhit: 1 of 3 events differ; first at eventNumber 3" in text
    assert "edepTotal" not in text


def test_negative_zero_differs_from_zero(tmp_path) -> None:
    ref = write(tmp_path / "r.root", [1], [0.0], [[1.0]])
    cand = write(tmp_path / "c.root", [1], [-0.0], [[1.0]])
    assert "branch edepTotal" in verify_files(cand, ref).summary()


def test_missing_events_and_branches(tmp_path) -> None:
    ref = write(tmp_path / "r.root", [1, 2, 3], [0, 0, 0], [[1.0], [2.0], [3.0]])
    cand = write(tmp_path / "c.root", [1, 3], [0, 0], [[1.0], [3.0]], extra=True)
    text = verify_files(cand, ref).summary()
    assert "2 events in" in text and "3 in" in text
    assert "missing eventNumbers: 2" in text
    assert "branches only in" in text and "other" in text


def test_unreadable_file(tmp_path) -> None:
    ref = write(tmp_path / "r.root", [1], [0.0], [[1.0]])
    with pytest.raises(VerifyError, match="cannot open"):
        verify_files(str(tmp_path / "absent.root"), ref)
    with uproot.recreate(tmp_path / "no_tree.root") as out:
        out["x"] = "y"
    with pytest.raises(VerifyError, match="no tree"):
        verify_files(str(tmp_path / "no_tree.root"), ref)
