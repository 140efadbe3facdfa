"""The service as a hostile web client meets it (review of issue 12's service): cross-site
requests to the page's endpoints, job ids that are almost valid, log lines forged through the
request, and signed links with a parameter given twice."""

from __future__ import annotations

import logging
import os

import pytest
from service_support import q, serve

pytestmark = pytest.mark.timeout(20)

JOB = "0123456789abcdef" * 2
KEY = "k3y-for-tests"


async def test_page_endpoints_refuse_cross_site_requests(origin):
    """/watch/info and /watch/progress are API endpoints: a cross-site page may not use them."""
    url = origin.url(5000, "xs", youtube=True)
    async with serve() as client:
        for target in (f"/watch/info?url={q(url)}", f"/watch/progress?job={JOB}"):
            resp = await client.get(target, headers={"Sec-Fetch-Site": "cross-site"})
            body = await resp.json()
            assert resp.status == 403 and "cross-site" in body["error"], (target, resp.status, body)
        # the page's own (same-origin) progress request is answered
        resp = await client.get(f"/watch/progress?job={JOB}", headers={"Sec-Fetch-Site": "same-origin"})
        assert resp.status == 404
    assert origin.request_count == 0


async def test_job_id_with_a_trailing_newline_is_refused(origin, tmp_path, monkeypatch):
    """``re.match(r"^...$")`` accepts "<32 hex>\\n": a progress file named with a newline."""
    from rangestream.service.watch import valid_job_id

    assert valid_job_id(JOB) and not valid_job_id(JOB + "\n") and not valid_job_id(JOB.upper())
    monkeypatch.setenv("RANGESTREAM_PROGRESS_DIR", str(tmp_path))
    url = origin.url(5000, "job", youtube=True)
    async with serve() as client:
        resp = await client.get(f"/watch/progress?job={JOB}%0A")
        assert resp.status == 400, resp.status
        resp = await client.get(f"/watch?url={q(url)}&job={JOB}%0A")
        assert resp.status == 400, resp.status
    assert os.listdir(tmp_path) == []
    assert origin.request_count == 0


async def test_requests_cannot_forge_log_lines(origin, caplog):
    """A path or query value with CR/LF (or other controls) is logged escaped, on one line."""
    url = origin.url(5000, "log", youtube=True)
    caplog.set_level(logging.INFO, logger="rangestream.service")
    async with serve() as client:
        for target in (f"/stream?url={q(url)}&x=%0AGET%20/fake%20-%3E%20200%0D",
                       "/nothing%0AGET%20/fake2?a=%1b[31m",
                       f"/stream?url={q(url + '&evil=%0A')}"):
            resp = await client.get(target)
            await resp.read()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("rangestream.service")]
    assert len(messages) >= 3
    for text in messages:
        assert not any(c in text for c in "\r\n\x1b"), text
    assert any("\\x0aGET /fake" in text for text in messages), messages


async def test_signed_link_with_a_repeated_parameter_is_refused(origin):
    """Sorting makes url=A&url=B and url=B&url=A one signature, while the endpoint reads the
    first value: a link signed with a name twice must never verify (and never be made)."""
    from rangestream.service.signing import signature

    a, b = origin.url(5000, "a", youtube=True), origin.url(5000, "b", youtube=True)
    pairs = [("url", a), ("url", b), ("exp", "9999999999")]
    sig = signature(KEY, "/stream", pairs)
    async with serve(signing_key=KEY) as client:
        for first, second in ((a, b), (b, a)):
            resp = await client.get(f"/stream?url={q(first)}&url={q(second)}&exp=9999999999&sig={sig}")
            assert resp.status == 403, (resp.status, await resp.read())
    assert origin.request_count == 0
    from rangestream.service import sign

    with pytest.raises(ValueError, match="once"):
        sign(KEY, "/stream", [("url", a), ("url", b)])


def test_run_mux_is_public_and_shared_by_mux_and_watch():
    from rangestream.service import handlers, page

    assert handlers.run_mux.__doc__ and "/watch" in handlers.run_mux.__doc__
    assert page.run_mux is handlers.run_mux
