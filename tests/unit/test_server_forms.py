"""The dispatcher's form decoder reads every body exactly as ``urllib.parse.parse_qs``."""

from __future__ import annotations

import json
import random
from urllib.parse import parse_qs, quote, urlencode

import pytest

from eventservice.server.panda import decode_form

ALPHABET = "ab=&%+ 2F3d7Bxyz\x00\t\n\r\x01é€\ud7ff~-_.;:/{}\"'"


def expected(text: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a",
        "a=",
        "=x",
        "&&a=1&&",
        "a=1&a=2&b=3&a=4",
        "a=b=c",
        "a=%3D%3d",
        "x=%zz%4",
        "x=%",
        "x=%2",
        "x=%2B+%20+",
        "x=a+b%2Bc",
        "x=%E2%82%AC%e2%82%ac",
        "x=%FF%FE",
        "x=%C3",
        "x=%00%0A%0D%0d%0a",
        "x=%3D20",
        "x=caf\u00e9%20%C3%A9",
        "k%3Dy=v%26w",
        "x=a%20%0D%0A%20b",
        "x=tr%20%20",
        "x=end%3D",
    ],
)
def test_edge_cases(text: str) -> None:
    assert decode_form(text) == expected(text)


def test_random_bodies() -> None:
    rng = random.Random(20261122)
    for _ in range(20_000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 24)))
        assert decode_form(text) == expected(text), repr(text)


def test_random_well_formed_bodies() -> None:
    rng = random.Random(7)
    for _ in range(5_000):
        value = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 24)))
        for text in (urlencode({"k": value, "v": "1"}), "k=" + quote(value, safe="")):
            assert decode_form(text) == expected(text), repr(text)


def test_an_update_event_ranges_body() -> None:
    entries = [
        {"eventRangeID": f"1-2-3-{i}-1", "eventStatus": "finished", "path": f"s3://b/x {i}"}
        for i in range(16)
    ]
    text = urlencode({"eventRanges": json.dumps(entries), "version": "0"})
    assert decode_form(text) == expected(text)
    assert json.loads(decode_form(text)["eventRanges"]) == entries
