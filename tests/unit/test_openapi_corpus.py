"""OpenAPI documents shaped like real public APIs (tests/data/openapi/): the tools generated
from them are valid for MCP and for model providers, and the request that reaches the API
is the one the document specifies (checked byte by byte against a real local HTTP app)."""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentlake.sim.openapi import OpenAPIError, tools_from_openapi
from agentlake.sim.staging import ForwardBehaviour, StagingServer, serve_asgi

CORPUS = Path(__file__).resolve().parents[1] / "data" / "openapi"
TRACKER = CORPUS / "tracker-3.0.yaml"
INVENTORY = CORPUS / "inventory-3.1.yaml"
SAFE = re.compile(r"^[a-zA-Z0-9_]{1,64}$")


class Recorder:
    """A real HTTP app that answers every request with 200 and keeps what it received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[Route("/{rest:path}", self.record, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
        )

    async def record(self, request: Request) -> Response:
        body = await request.body()
        form = None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            parsed = await request.form()
            form = [
                (k, v if isinstance(v, str) else {"file": (await v.read()).decode(), "name": v.filename})
                for k, v in parsed.multi_items()
            ]
        self.requests.append(
            {
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode(),
                "path": request.url.path,
                "query_string": request.scope["query_string"].decode(),
                "query": urllib.parse.parse_qsl(
                    request.scope["query_string"].decode(), keep_blank_values=True
                ),
                "headers": dict(request.headers),
                "body": body,
                "form": form,
            }
        )
        return JSONResponse({"ok": True})


@pytest_asyncio.fixture
async def api() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()
    async with await serve_asgi(recorder.app) as handle:
        yield recorder, handle.url


async def call(
    base_url: str, document: Path, tool: str, args: dict[str, Any], recorder: Recorder
) -> dict[str, Any]:
    staging = StagingServer(tools_from_openapi(document, base_url=base_url))
    async with Client(staging.server) as client:
        result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    return recorder.requests[-1]


@pytest.mark.parametrize("document", [TRACKER, INVENTORY], ids=["3.0", "3.1"])
async def test_generated_tools_are_valid_mcp_tools_with_provider_safe_names(document: Path) -> None:
    tools = tools_from_openapi(document)
    meta = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)
    for tool in tools:
        assert SAFE.match(tool.name), tool.name
        assert not list(meta.iter_errors(tool.input_schema)), tool.name  # Draft 2020-12 meta-schema
        assert tool.input_schema["type"] == "object"
        assert all(SAFE.match(arg) for arg in tool.input_schema["properties"]), tool.input_schema[
            "properties"
        ]
    async with Client(StagingServer(tools).server) as client:
        listed = await client.list_tools()
    assert [t.name for t in listed.tools] == [t.name for t in tools]


def test_the_tracker_document_maps_names_reversibly_and_keeps_colliding_parameters() -> None:
    tools = {t.name: t for t in tools_from_openapi(TRACKER)}
    assert set(tools) == {
        "issues_list",
        "issues_create",
        "issues_get",
        "issues_update",
        "labels_replace",
        "charges_create",
        "files_upload",
        "files_content",
        "notes_put",
        "blobs_put",
        "exports_create",
        "points_add",
    }
    listing = tools["issues_list"]
    assert isinstance(listing.behaviour, ForwardBehaviour)
    wire = {p.arg: (p.name, p.location) for p in listing.behaviour.params}
    assert wire["page_size"] == ("page[size]", "query")
    assert wire["StartTime"] == ("StartTime<", "query")
    assert wire["X_Request_Id"] == ("X-Request-Id", "header")
    assert wire["project_id"] == ("project_id", "path")  # a path-level parameter
    get = tools["issues_get"]
    assert set(get.input_schema["properties"]) >= {"id", "id_query"}
    assert isinstance(get.behaviour, ForwardBehaviour)
    assert {p.arg: (p.name, p.location) for p in get.behaviour.params}["id_query"] == ("id", "query")
    assert "id" in get.input_schema["required"] and "id_query" not in get.input_schema["required"]
    assert isinstance(listing.behaviour, ForwardBehaviour)
    assert listing.behaviour.base_url == "https://tracker.example.com/v2"  # server variables' defaults
    create = tools["issues_create"].input_schema
    assert "id" not in create["properties"]  # readOnly: the server sets it
    assert create["required"] == ["project_id", "title"]
    assert create["properties"]["due"]["type"] == ["string", "null"]  # nullable
    assert create["properties"]["estimate"]["exclusiveMinimum"] == 0  # 3.0 boolean form converted
    points = tools["points_add"].input_schema["properties"]["point"]
    assert points["prefixItems"] == [{"type": "number"}, {"type": "number"}] and points["items"] is False


async def test_every_parameter_style_reaches_the_api_as_specified(api: tuple[Recorder, str]) -> None:
    recorder, url = api
    args = {
        "project_id": "AB",
        "X_Request_Id": "5f2b",
        "labels": ["bug", "ui"],
        "assignee": ["ann", "bob"],
        "filter": {"status": "open", "priority": 2},
        "page_size": 50,
        "sort": ["created", "priority"],
        "fields": ["id", "title"],
        "StartTime": "2024-01-01T00:00:00Z",
        "q": "a/b?c",
        "session": "s1",
        "where": {"x": 1},
    }
    req = await call(url + "/v2", TRACKER, "issues_list", args, recorder)
    assert (req["method"], req["raw_path"]) == ("GET", "/v2/projects/AB/issues")
    assert req["query"] == [
        ("labels", "bug,ui"),  # form, explode false
        ("assignee", "ann"),  # form, explode true
        ("assignee", "bob"),
        ("filter[status]", "open"),  # deepObject
        ("filter[priority]", "2"),
        ("page[size]", "50"),  # the wire name, not the argument name
        ("sort", "created priority"),  # spaceDelimited
        ("fields", "id|title"),  # pipeDelimited
        ("StartTime<", "2024-01-01T00:00:00Z"),
        ("q", "a/b?c"),
        ("where", '{"x":1}'),  # content: application/json
    ]
    assert "q=a/b?c" in req["query_string"]  # allowReserved: reserved characters not encoded
    assert req["headers"]["x-request-id"] == "5f2b" and req["headers"]["cookie"] == "session=s1"


async def test_a_path_id_and_a_query_id_both_reach_the_api(api: tuple[Recorder, str]) -> None:
    recorder, url = api
    args = {"project_id": "AB", "id": 7, "id_query": "ext-1", "expand": {"comments": True, "history": False}}
    req = await call(url, TRACKER, "issues_get", args, recorder)
    assert req["raw_path"] == "/projects/AB/issues/7"
    assert req["query"] == [
        ("id", "ext-1"),
        ("comments", "true"),
        ("history", "false"),
    ]  # form explode object


@pytest.mark.parametrize(("value", "raw"), [("..", "%2E%2E"), (".", "%2E"), ("a/../b", "a%2F..%2Fb")])
async def test_dot_segments_in_a_path_argument_never_reach_another_endpoint(
    api: tuple[Recorder, str], value: str, raw: str
) -> None:
    recorder, url = api
    req = await call(url + "/v1", TRACKER, "files_content", {"file_id": value}, recorder)
    assert req["raw_path"] == f"/v1/files/{raw}/content"
    assert req["path"] == f"/v1/files/{value}/content"  # the API sees the id it was given


async def test_json_bodies_merge_patch_and_arrays(api: tuple[Recorder, str]) -> None:
    recorder, url = api
    new = {"project_id": "AB", "title": "Crash", "status": "open", "links": [{"kind": "blocks", "target": 3}]}
    req = await call(url, TRACKER, "issues_create", new, recorder)
    assert req["headers"]["content-type"] == "application/json"
    assert json.loads(req["body"]) == {
        "title": "Crash",
        "status": "open",
        "links": [{"kind": "blocks", "target": 3}],
    }
    patch = {"project_id": "AB", "id": 4, "title": "x", "assignee": {"type": "team", "slug": "core"}}
    req = await call(url, TRACKER, "issues_update", patch, recorder)
    assert (req["method"], req["headers"]["content-type"]) == ("PATCH", "application/merge-patch+json")
    assert json.loads(req["body"]) == {"title": "x", "assignee": {"type": "team", "slug": "core"}}
    req = await call(
        url, TRACKER, "labels_replace", {"project_id": "AB", "id": 4, "body": ["a", "b"]}, recorder
    )
    assert (req["method"], json.loads(req["body"])) == ("PUT", ["a", "b"])
    req = await call(url, TRACKER, "points_add", {"point": [1.5, 2]}, recorder)
    assert json.loads(req["body"]) == {"point": [1.5, 2]}


async def test_form_multipart_text_binary_and_xml_bodies(api: tuple[Recorder, str]) -> None:
    recorder, url = api
    charge = {"amount": 100, "currency": "eur", "metadata": {"order": "7"}, "expand": ["customer", "invoice"]}
    req = await call(url, TRACKER, "charges_create", charge, recorder)
    assert req["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert urllib.parse.parse_qsl(req["body"].decode()) == [
        ("amount", "100"),
        ("currency", "eur"),
        ("metadata", '{"order":"7"}'),
        ("expand[]", "customer"),
        ("expand[]", "invoice"),
    ]
    upload = {"file": base64.b64encode(b"hello").decode(), "purpose": "avatar", "tags": ["a", "b"]}
    req = await call(url, TRACKER, "files_upload", upload, recorder)
    assert req["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert req["form"] == [
        ("file", {"file": "hello", "name": "file"}),
        ("purpose", "avatar"),
        ("tags", "a"),
        ("tags", "b"),
    ]
    req = await call(url, TRACKER, "notes_put", {"id": "n1", "body": "hello world"}, recorder)
    assert (req["headers"]["content-type"], req["body"]) == ("text/plain", b"hello world")
    req = await call(
        url, TRACKER, "blobs_put", {"key": "k", "body": base64.b64encode(b"\x00\x01\x02").decode()}, recorder
    )
    assert (req["headers"]["content-type"], req["body"]) == ("application/octet-stream", b"\x00\x01\x02")
    req = await call(url, TRACKER, "exports_create", {"body": "<export/>"}, recorder)
    assert (req["headers"]["content-type"], req["body"]) == ("application/xml", b"<export/>")


async def test_openapi_31_matrix_label_headers_and_base64_media(api: tuple[Recorder, str]) -> None:
    recorder, url = api
    req = await call(url, INVENTORY, "items_at", {"coords": {"aisle": 3, "shelf": "B"}}, recorder)
    assert req["raw_path"] == "/items;aisle=3;shelf=B"  # matrix, explode
    req = await call(url, INVENTORY, "colors_get", {"palette": ["blue", "black"]}, recorder)
    assert req["raw_path"] == "/colors.blue,black"  # label, no explode
    item = {
        "sku": "S-1",
        "If_Match": "etag1",
        "tags": ["x", "y"],
        "name": "Cup",
        "kind": "item",
        "price": None,
    }
    req = await call(url, INVENTORY, "items_put", item, recorder)
    assert req["headers"]["if-match"] == "etag1" and req["headers"]["tags"] == "x,y"
    assert json.loads(req["body"]) == {"name": "Cup", "kind": "item", "price": None}
    png = base64.b64encode(b"\x89PNG").decode()
    req = await call(url, INVENTORY, "items_image", {"sku": "S-1", "body": png}, recorder)
    assert (req["headers"]["content-type"], req["body"]) == ("image/png", b"\x89PNG")


async def test_arguments_outside_the_schema_are_rejected_before_any_request(
    api: tuple[Recorder, str],
) -> None:
    recorder, url = api
    staging = StagingServer(tools_from_openapi(TRACKER, base_url=url))
    async with Client(staging.server) as client:
        bad_tuple = await client.call_tool("points_add", {"point": [1, 2, 3]})
        bad_enum = await client.call_tool("issues_list", {"project_id": "AB", "sort": ["nope"]})
    assert bad_tuple.is_error and bad_enum.is_error and recorder.requests == []


def test_an_invalid_generated_schema_is_an_error_at_generation() -> None:
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "T", "version": "1"},
        "servers": [{"url": "https://x.example"}],
        "paths": {
            "/n": {
                "get": {
                    "operationId": "n",
                    "parameters": [
                        {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": "zero"}}
                    ],
                }
            }
        },
    }
    with pytest.raises(
        OpenAPIError, match=r"GET /n: the generated input schema is invalid at properties/n/minimum"
    ):
        tools_from_openapi(doc)
