"""OpenAPI 3 documents turned into staging tools, and a generated server forwarding to a real API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import mcp_types as types
import pytest
import pytest_asyncio
import yaml
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentlake.sim.openapi import OpenAPIError, load_openapi, openapi_to_server_spec, tools_from_openapi
from agentlake.sim.staging import ERROR_KIND_KEY, ForwardBehaviour, StagingServer, ToolDef, serve_asgi

PETSTORE = Path(__file__).resolve().parents[1] / "data" / "petstore-openapi.yaml"


def by_name(tools: list[ToolDef]) -> dict[str, ToolDef]:
    return {t.name: t for t in tools}


def forward(tool: ToolDef) -> ForwardBehaviour:
    assert isinstance(tool.behaviour, ForwardBehaviour)
    return tool.behaviour


def doc(paths: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "T", "version": "1"}, "paths": paths, **extra}


def text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


# ---------------------------------------------------------------------------
# conversion


def test_one_tool_per_operation_with_sanitised_names_and_descriptions() -> None:
    tools = tools_from_openapi(PETSTORE)
    assert [t.name for t in tools] == [
        "listPets",
        "createPet",
        "showPetById",
        "delete_pets_petId",  # no operationId: method and path
        "replace_pet_tags",  # operationId "replace-pet-tags", sanitised
    ]
    tools_by_name = by_name(tools)
    assert tools_by_name["listPets"].description == "List all pets"
    assert tools_by_name["createPet"].description == (
        "Create a pet\n\nAdds a pet to the store and returns it with its id."
    )


def test_parameters_become_arguments_with_required_and_placement() -> None:
    tools = by_name(tools_from_openapi(PETSTORE))
    listing = tools["listPets"]
    assert listing.input_schema["properties"]["limit"] == {
        "type": "integer",
        "format": "int32",
        "minimum": 1,
        "maximum": 100,
        "description": "How many items to return at one time (max 100)",
    }
    # wire names are not valid argument names for every provider: mapped, and told to the model
    assert set(listing.input_schema["properties"]) == {"limit", "tag", "X_Request_Id"}
    assert (
        "header parameter 'X-Request-Id'" in listing.input_schema["properties"]["X_Request_Id"]["description"]
    )
    assert "required" not in listing.input_schema
    assert listing.input_schema["additionalProperties"] is False
    assert (forward(listing).method, forward(listing).path) == ("GET", "/pets")
    assert [(p.arg, p.name, p.location) for p in forward(listing).params] == [
        ("limit", "limit", "query"),
        ("tag", "tag", "query"),
        ("X_Request_Id", "X-Request-Id", "header"),
    ]

    show = tools["showPetById"]  # petId comes from a $ref parameter declared on the path item
    assert show.input_schema["properties"]["petId"] == {"type": "integer", "description": "The id of the pet"}
    assert show.input_schema["required"] == ["petId"]
    assert forward(show).path == "/pets/{petId}" and forward(show).path_args == ["petId"]
    assert forward(tools["delete_pets_petId"]).method == "DELETE"


def test_object_body_is_merged_with_refs_resolved_and_recursion_in_defs() -> None:
    create = by_name(tools_from_openapi(PETSTORE))["createPet"]
    schema = create.input_schema
    assert set(schema["properties"]) == {"name", "tag", "category"}
    assert schema["required"] == ["name"]
    assert schema["properties"]["name"] == {"type": "string", "examples": ["Rex"]}
    assert schema["properties"]["tag"] == {"type": ["string", "null"]}  # nullable: true
    category = schema["properties"]["category"]
    assert category["properties"]["parent"] == {"$ref": "#/$defs/Category"}
    assert schema["$defs"]["Category"]["properties"]["parent"] == {"$ref": "#/$defs/Category"}
    assert forward(create).body_fields == {"name": "name", "tag": "tag", "category": "category"}
    assert forward(create).body_arg is None

    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = {"name": "Rex", "tag": None, "category": {"name": "dogs", "parent": {"name": "animals"}}}
    assert validator.is_valid(good)
    assert not validator.is_valid({"name": "Rex", "category": {"parent": {"name": "animals"}}})
    assert not validator.is_valid({"name": "Rex", "category": {"name": "d", "parent": {"name": 3}}})
    assert not validator.is_valid({"tag": "x"})
    assert not validator.is_valid({"name": "Rex", "colour": "brown"})


def test_non_object_body_goes_under_body() -> None:
    tags = by_name(tools_from_openapi(PETSTORE))["replace_pet_tags"]
    assert tags.input_schema["properties"]["body"] == {"type": "array", "items": {"type": "string"}}
    assert tags.input_schema["required"] == ["petId", "body"]
    assert forward(tags).body_arg == "body" and forward(tags).method == "PUT"


def test_base_url_from_servers_with_variables_or_from_the_argument() -> None:
    tools = tools_from_openapi(PETSTORE)
    assert {forward(t).base_url for t in tools} == {"http://petstore.example.com:8080/v1"}
    tools = tools_from_openapi(PETSTORE, base_url="http://127.0.0.1:1234/v1")
    assert {forward(t).base_url for t in tools} == {"http://127.0.0.1:1234/v1"}
    per_operation = doc(
        {
            "/a": {
                "servers": [{"url": "https://path.example/"}],
                "get": {"operationId": "a", "servers": [{"url": "https://op.example"}]},
                "post": {"operationId": "b"},
            }
        },
        servers=[{"url": "https://doc.example"}],
    )
    assert [forward(t).base_url for t in tools_from_openapi(per_operation)] == [
        "https://op.example",
        "https://path.example/",
    ]


def test_allof_body_drops_read_only_and_merges_required() -> None:
    spec = yaml.safe_load(PETSTORE.read_text())
    spec["paths"]["/pets"]["post"]["requestBody"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/Pet"
    }
    create = by_name(tools_from_openapi(spec))["createPet"]
    assert set(create.input_schema["properties"]) == {"name", "tag", "category"}  # id is readOnly
    assert create.input_schema["required"] == ["name"]


def test_openapi_30_keywords_become_json_schema() -> None:
    spec = doc(
        {
            "/n": {
                "get": {
                    "operationId": "n",
                    "parameters": [
                        {
                            "name": "x",
                            "in": "query",
                            "schema": {
                                "type": "number",
                                "minimum": 0,
                                "exclusiveMinimum": True,
                                "maximum": 9,
                            },
                        },
                        {"name": "colour", "in": "query", "schema": {"enum": ["red"], "nullable": True}},
                        {"name": "Accept", "in": "header", "schema": {"type": "string"}},
                        {"name": "session", "in": "cookie", "schema": {"type": "string"}},
                        {
                            "name": "f",
                            "in": "query",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                    ],
                }
            }
        }
    )
    [tool] = tools_from_openapi(spec, base_url="http://127.0.0.1:1")
    props = tool.input_schema["properties"]
    assert props["x"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 9}
    assert props["colour"] == {"enum": ["red", None]}
    assert props["f"] == {"type": "object"}
    assert set(props) == {"x", "colour", "f", "session"}  # Accept (a reserved header) is left out
    assert {p.name: p.location for p in forward(tool).params}["session"] == "cookie"
    assert {p.name: p.content for p in forward(tool).params}["f"] == "application/json"


def test_mutual_recursion_and_self_referencing_body() -> None:
    spec = doc(
        {
            "/tree": {
                "post": {
                    "operationId": "plant",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}},
                    },
                }
            }
        },
        components={
            "schemas": {
                "Node": {
                    "type": "object",
                    "required": ["label"],
                    "properties": {
                        "label": {"type": "string"},
                        "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
                        "owner": {"$ref": "#/components/schemas/Person"},
                    },
                },
                "Person": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "garden": {"$ref": "#/components/schemas/Node"},
                    },
                },
            }
        },
    )
    [tool] = tools_from_openapi(spec, base_url="http://127.0.0.1:1")
    schema = tool.input_schema
    assert schema["properties"]["children"] == {"type": "array", "items": {"$ref": "#/$defs/Node"}}
    assert schema["properties"]["owner"]["properties"]["garden"] == {"$ref": "#/$defs/Node"}
    assert set(schema["$defs"]) == {"Node"}
    assert schema["$defs"]["Node"]["properties"]["owner"]["properties"]["garden"] == {"$ref": "#/$defs/Node"}
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"label": "root", "children": [{"label": "leaf", "children": []}]})
    assert not validator.is_valid({"label": "root", "children": [{"children": []}]})
    assert not validator.is_valid({"label": "r", "owner": {"garden": {"label": 1}}})
    StagingServer([tool])  # the server accepts the schema


def test_long_duplicate_and_odd_names() -> None:
    long_path = "/" + "/".join(["segment"] * 12) + "/{id}"
    id_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    spec = doc(
        {
            long_path: {"parameters": id_param, "get": {}, "put": {}},
            "/x": {"get": {"operationId": "pets.list v2"}, "post": {"operationId": "pets.list v2"}},
        }
    )
    names = [t.name for t in tools_from_openapi(spec, base_url="http://127.0.0.1:1")]
    assert all(len(n) <= 64 and n.replace("_", "").isalnum() for n in names)
    assert names[0].startswith("get_segment_segment") and names[1].startswith("put_segment")
    assert names[2:] == ["pets_list_v2", "pets_list_v2_2"]
    assert len(set(names)) == len(names)


def test_body_clashing_with_a_parameter_keeps_both_and_other_media_types_make_tools() -> None:
    spec = doc(
        {
            "/items/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "put": {
                    "operationId": "put_item",
                    "requestBody": {
                        "content": {
                            "application/merge-patch+json": {
                                "schema": {"type": "object", "properties": {"id": {"type": "integer"}}}
                            }
                        }
                    },
                },
                "post": {
                    "operationId": "upload",
                    "requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object"}}}},
                },
            }
        }
    )
    tools = tools_from_openapi(spec, base_url="http://127.0.0.1:1")
    assert [t.name for t in tools] == ["put_item", "upload"]
    put = tools[0]
    assert set(put.input_schema["properties"]) == {"id", "id_body"}
    assert put.input_schema["required"] == ["id"]  # the body is optional here
    assert forward(put).body_fields == {"id_body": "id"} and forward(put).media_type.endswith("+json")


def test_open_object_body_forwards_extra_arguments() -> None:
    spec = doc(
        {
            "/notes": {
                "post": {
                    "operationId": "note",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"text": {"type": "string"}},
                                    "additionalProperties": {"type": "string"},
                                }
                            }
                        },
                    },
                }
            }
        }
    )
    [tool] = tools_from_openapi(spec, base_url="http://127.0.0.1:1")
    assert tool.input_schema["additionalProperties"] == {"type": "string"}
    assert forward(tool).body is None  # everything not placed elsewhere goes to the body


def test_server_spec_for_the_registry() -> None:
    spec = openapi_to_server_spec(PETSTORE)
    assert spec["id"] == "swagger-petstore"
    assert [t["name"] for t in spec["tools"]] == [t.name for t in tools_from_openapi(PETSTORE)]
    assert all(set(t) == {"name", "description", "input_schema"} for t in spec["tools"])
    no_servers = yaml.safe_load(PETSTORE.read_text())
    del no_servers["servers"]
    assert openapi_to_server_spec(no_servers)["tools"] == spec["tools"]  # no base URL needed
    json.dumps(spec)  # plain JSON


def test_json_files_load_too(tmp_path: Path) -> None:
    path = tmp_path / "petstore.json"
    path.write_text(json.dumps(yaml.safe_load(PETSTORE.read_text())))
    assert [t.name for t in tools_from_openapi(path)] == [t.name for t in tools_from_openapi(PETSTORE)]
    assert load_openapi(str(path))["info"]["title"] == "Swagger Petstore"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"swagger": "2.0", "paths": {}}, "Swagger 2.0; only OpenAPI 3.x"),
        ({"openapi": "4.0.0", "paths": {}}, "OpenAPI 4.0.0; only OpenAPI 3.x"),
        ({"info": {}}, "no 'openapi' version field"),
        ({"openapi": "3.0.3", "info": {}}, "no 'paths' object"),
        ({"openapi": "3.0.3", "paths": {}}, "hold no operations"),
        (
            doc({"/a": {"get": {"parameters": [{"$ref": "other.yaml#/components/parameters/P"}]}}}),
            "external $ref 'other.yaml#/components/parameters/P' is not supported",
        ),
        (
            doc({"/a": {"get": {"parameters": [{"$ref": "#/components/parameters/Nope"}]}}}),
            "points to nothing",
        ),
        (doc({"/a/{id}": {"get": {}}}), "path parameter(s) id are not declared"),
        (doc({"/a": {"get": {"operationId": "a"}}}), "no servers[0].url; pass --base-url URL"),
        (doc({"/a": {"get": {}}}, servers=[{"url": "/v1"}]), "'/v1' is not an absolute http(s) URL"),
        (doc({"/a": {"$ref": "#/paths/~1a"}}), "refers to itself"),
    ],
)
def test_invalid_documents_fail_with_one_line(document: dict[str, Any], message: str) -> None:
    with pytest.raises(OpenAPIError) as info:
        tools_from_openapi(document)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_files_fail_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(OpenAPIError, match="does not exist"):
        load_openapi(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("openapi: 3.0.0\npaths: {unclosed: [\n")
    with pytest.raises(OpenAPIError, match="cannot parse") as info:
        load_openapi(broken)
    assert "\n" not in str(info.value)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(OpenAPIError, match="expected a mapping"):
        load_openapi(listing)


# ---------------------------------------------------------------------------
# end to end: the generated server forwards to a real local API


class PetStore:
    """The API the petstore document describes, in memory."""

    def __init__(self) -> None:
        self.pets: dict[int, dict[str, Any]] = {1: {"id": 1, "name": "Rex", "tag": "dog"}}
        self.request_ids: list[str | None] = []
        self.app = Starlette(
            routes=[
                Route("/v1/pets", self.list_pets, methods=["GET"]),
                Route("/v1/pets", self.create_pet, methods=["POST"]),
                Route("/v1/pets/{pet_id:int}", self.show_pet, methods=["GET"]),
                Route("/v1/pets/{pet_id:int}", self.delete_pet, methods=["DELETE"]),
                Route("/v1/pets/{pet_id:int}/tags", self.replace_tags, methods=["PUT"]),
            ]
        )

    async def list_pets(self, request: Request) -> Response:
        self.request_ids.append(request.headers.get("x-request-id"))
        pets = list(self.pets.values())
        if "tag" in request.query_params:
            pets = [p for p in pets if p.get("tag") == request.query_params["tag"]]
        return JSONResponse(pets[: int(request.query_params.get("limit", 100))])

    async def create_pet(self, request: Request) -> Response:
        body = await request.json()
        pet = {"id": max(self.pets, default=0) + 1, **body}
        self.pets[pet["id"]] = pet
        return JSONResponse(pet, status_code=201)

    async def show_pet(self, request: Request) -> Response:
        pet_id = request.path_params["pet_id"]
        if pet_id not in self.pets:
            return JSONResponse({"error": f"pet {pet_id} not found"}, status_code=404)
        return JSONResponse(self.pets[pet_id])

    async def delete_pet(self, request: Request) -> Response:
        self.pets.pop(request.path_params["pet_id"], None)
        return Response(status_code=204)

    async def replace_tags(self, request: Request) -> Response:
        pet = self.pets[request.path_params["pet_id"]]
        pet["tags"] = await request.json()
        return JSONResponse(pet)


@pytest_asyncio.fixture
async def petstore() -> AsyncIterator[tuple[PetStore, str]]:
    store = PetStore()
    async with await serve_asgi(store.app) as handle:
        yield store, handle.url + "/v1"


async def test_generated_server_forwards_to_the_api(petstore: tuple[PetStore, str]) -> None:
    store, base_url = petstore
    staging = StagingServer(tools_from_openapi(PETSTORE, base_url=base_url), name="petstore")
    async with Client(staging.server) as client:
        listed = await client.list_tools()
        created = await client.call_tool(
            "createPet",
            {"name": "Tom", "tag": "cat", "category": {"name": "cats", "parent": {"name": "pets"}}},
        )
        cats = await client.call_tool("listPets", {"tag": "cat", "limit": 5, "X_Request_Id": "req-1"})
        shown = await client.call_tool("showPetById", {"petId": 2})
        tagged = await client.call_tool("replace_pet_tags", {"petId": 2, "body": ["indoor", "grumpy"]})
        deleted = await client.call_tool("delete_pets_petId", {"petId": 1})
        gone = await client.call_tool("showPetById", {"petId": 1})
        invalid = await client.call_tool("showPetById", {"petId": "two"})
        too_many = await client.call_tool("listPets", {"limit": 1000})
    assert {t.name: t.input_schema for t in listed.tools}["createPet"]["required"] == ["name"]
    tom = {"id": 2, "name": "Tom", "tag": "cat", "category": {"name": "cats", "parent": {"name": "pets"}}}
    assert created.structured_content == tom
    assert json.loads(text(cats)) == [tom] and cats.structured_content is None  # a JSON array is text
    assert store.request_ids == ["req-1"]
    assert shown.structured_content == tom
    assert tagged.structured_content["tags"] == ["indoor", "grumpy"]
    assert deleted.structured_content == {"status": 204} and 1 not in store.pets
    assert gone.is_error and (gone.meta or {})[ERROR_KIND_KEY] == "tool_error"
    assert text(gone).startswith("HTTP 404 from GET ") and "pet 1 not found" in text(gone)
    assert (invalid.meta or {})[ERROR_KIND_KEY] == "invalid_arguments"
    assert (too_many.meta or {})[ERROR_KIND_KEY] == "invalid_arguments" and "maximum" in text(too_many)
    assert [c.tool for c in staging.calls if not c.is_error] == [
        "createPet",
        "listPets",
        "showPetById",
        "replace_pet_tags",
        "delete_pets_petId",
    ]
