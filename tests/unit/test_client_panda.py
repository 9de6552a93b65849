"""PandaClient over httpx.MockTransport: encoding, retries, StatusCode handling."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlencode

import httpx
import pytest

from eventservice.client.panda import PandaClient, RetryPolicy
from eventservice.errors import Conflict, DispatcherUnavailable, InvalidInput, MissingKey, NotFound


def make_client(handler, retry_for: float = 10.0):
    sleeps: list[float] = []
    client = PandaClient(
        "http://dispatcher.test",
        retry=RetryPolicy(retry_for=retry_for, base=0.01, max_delay=0.05),
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
    )
    return client, sleeps


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def test_requests_are_form_posts_that_accept_json():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, json={"StatusCode": 0, "command": "NULL"})

    client, _ = make_client(handler)
    assert client.update_job(7, "running", nEvents=3, outputFiles=[{"path": "x"}]) is None
    request = seen[0]
    assert request.method == "POST"
    assert request.url.path == "/server/panda/updateJob"
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    body = form(request)
    assert body["jobId"] == "7" and body["state"] == "running" and body["nEvents"] == "3"
    assert json.loads(body["outputFiles"]) == [{"path": "x"}]


def test_retries_5xx_and_network_errors_then_succeeds():
    answers = iter(
        [
            httpx.ConnectError("refused"),
            httpx.Response(503, text="db down"),
            httpx.Response(200, json={"StatusCode": 0, "eventRanges": [{"eventRangeID": "a"}]}),
        ]
    )

    def handler(request):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client, sleeps = make_client(handler)
    assert client.get_event_ranges(1, 2, 3, 4) == [{"eventRangeID": "a"}]
    assert len(sleeps) == 2
    assert sleeps[1] >= sleeps[0]  # exponential backoff


def test_gives_up_after_retry_budget():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(500)

    client = PandaClient(
        "http://dispatcher.test",
        retry=RetryPolicy(retry_for=0.3, base=0.02, max_delay=0.05),
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(DispatcherUnavailable, match="HTTP 500"):
        client.get_status()
    assert 2 <= len(calls) <= 20


def test_no_jobs_is_none_and_a_job_is_its_fields():
    answers = iter([{"StatusCode": 20}, {"StatusCode": 0, "PandaID": 5, "eventService": "True"}])
    client, _ = make_client(lambda r: httpx.Response(200, json=next(answers)))
    assert client.get_job("Q", node="n") is None
    job = client.get_job("Q", node="n")
    assert job is not None and job["PandaID"] == 5


@pytest.mark.parametrize(
    ("code", "error"), [(50, InvalidInput), (80, MissingKey), (60, Conflict), (70, Conflict)]
)
def test_status_codes_become_errors(code, error):
    client, _ = make_client(
        lambda r: httpx.Response(200, json={"StatusCode": code, "errorDialog": "nope"})
    )
    with pytest.raises(error, match="nope"):
        client.update_job(1, "running")


def test_urlencoded_answers_are_decoded():
    body = urlencode(
        {"StatusCode": "0", "eventRanges": json.dumps([{"eventRangeID": "1-2-3-4-1"}])}
    )
    client, _ = make_client(
        lambda r: httpx.Response(
            200, text=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
    )
    assert client.get_event_ranges(1, 2, 3, 1) == [{"eventRangeID": "1-2-3-4-1"}]


def test_update_event_ranges_result_and_commands():
    def handler(request):
        body = form(request)
        assert body["version"] == "1"
        assert json.loads(body["eventRanges"])[0]["zipFile"]["lfn"] == "z.tar"
        return httpx.Response(
            200,
            json={
                "StatusCode": 0,
                "Returns": [True, False],
                "Errors": [None, "stale"],
                "Command": {"9": "softkill"},
            },
        )

    client, _ = make_client(handler)
    result = client.update_event_ranges([{"zipFile": {"lfn": "z.tar"}, "eventRanges": []}], 1)
    assert result.returns == [True, False]
    assert result.errors[1] == "stale"
    assert result.command_for(9) == "softkill"
    assert result.command_for(10) is None
    with pytest.raises(InvalidInput):
        client.update_event_ranges([], version=2)


def test_queue_definition_and_unknown_queue():
    def handler(request):
        assert request.method == "GET"
        if request.url.path.endswith("/LOCAL"):
            return httpx.Response(200, json={"name": "LOCAL", "corecount": 2})
        return httpx.Response(404, json={"detail": "no such queue"})

    client, _ = make_client(handler)
    assert client.get_queue("LOCAL")["corecount"] == 2
    with pytest.raises(NotFound):
        client.get_queue("NOPE")


def test_http_4xx_is_not_retried():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(422, text="bad")

    client, sleeps = make_client(handler)
    with pytest.raises(InvalidInput, match="422"):
        client.check_events_availability(1, 2, 3)
    assert calls == [1] and sleeps == []


def test_retrying_stops_when_told_to_give_up():
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 3:
            client.give_up_retrying = lambda: True
        raise httpx.ConnectError("refused")

    client = PandaClient(
        "http://dispatcher.test",
        retry=RetryPolicy(retry_for=600, base=0.01, max_delay=0.02),
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(DispatcherUnavailable, match="gave up after 3 tries"):
        client.get_status()
    assert len(calls) == 3


def test_plain_http_client_loads_no_certificate_store():
    import ssl

    from eventservice.tls import tls_context

    context = tls_context("http://127.0.0.1:8080")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0
    assert tls_context("https://dispatcher.example.org") is True
