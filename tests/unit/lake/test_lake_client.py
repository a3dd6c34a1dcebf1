"""The lake client's errors: a bad URL at construction, no server, an answer that is not JSON."""

from __future__ import annotations

import httpx
import pytest

from agentlake.cli._bind import is_loopback
from agentlake.lake.client import LakeClient, LakeError, LakeUnreachable
from tests.unit.test_cli_user_errors import closed_port


@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1/", "http://", "127.0.0.1:8765"])
def test_a_url_that_is_not_http_host_port_is_refused_at_once(url: str) -> None:
    with pytest.raises(LakeError, match=r"^bad lake URL .*expected http://HOST:PORT"):
        LakeClient(url)


def test_no_server_is_lake_unreachable_naming_the_url_and_what_to_run() -> None:
    port = closed_port()
    with LakeClient(f"http://127.0.0.1:{port}/") as c, pytest.raises(LakeUnreachable) as info:
        c.stats()
    text = str(info.value)
    assert text.startswith(f"cannot reach the lake at http://127.0.0.1:{port}: ")
    assert text.endswith("; is `agentlake lake serve` running?") and "\n" not in text


def test_an_error_answer_and_a_non_json_answer_are_lake_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/stats":
            return httpx.Response(200, text="<html>not the lake</html>")
        return httpx.Response(422, text='{"detail": "tenant missing"}')

    c = LakeClient("http://lake.test")
    c._http = httpx.Client(base_url=c.base_url, transport=httpx.MockTransport(handler))
    with c:
        with pytest.raises(LakeError, match="not JSON: is this the lake's URL"):
            c.stats()
        with pytest.raises(LakeError, match=r"/v1/lookup answered 422: .*tenant missing"):
            c.lookup("", "x")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("8.8.8.8", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
