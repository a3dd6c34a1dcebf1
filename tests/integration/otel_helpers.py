"""Helpers shared by the OTel and dashboard integration tests: a uvicorn server in a thread,
an OTLP/JSON span exporter, and a GenAI-instrumented fake agent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from agentlake._net import free_port as free_port  # re-exported for the OTel tests


class ServerThread:
    """Runs an ASGI app with uvicorn on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class OtlpJsonSpanExporter:
    """OTLP/HTTP JSON as the spec defines it, from the SDK's own span encoding.

    The Python exporter has no JSON mode: encode with the SDK's `encode_spans`
    (the same proto the protobuf exporter sends), serialize with protobuf's
    json_format, and write trace/span ids as hex as OTLP/JSON requires.
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.statuses: list[int] = []

    def export(self, spans: Sequence[Any]) -> Any:
        import httpx
        from google.protobuf import json_format
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.trace.export import SpanExportResult

        doc = json_format.MessageToDict(encode_spans(spans))
        _ids_to_hex(doc)
        r = httpx.post(self.endpoint, content=json.dumps(doc), headers={"Content-Type": "application/json"})
        self.statuses.append(r.status_code)
        return SpanExportResult.SUCCESS if r.status_code == 200 else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _ids_to_hex(node: Any) -> None:
    import base64

    if isinstance(node, list):
        for x in node:
            _ids_to_hex(x)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                node[k] = base64.b64decode(v).hex()
            else:
                _ids_to_hex(v)


def run_agent(
    tracer: Any, task: str, tools: list[tuple[str, dict[str, Any], Any, bool]], **attrs: Any
) -> str:
    """A fake agent instrumented with the GenAI conventions: one invoke_agent span, a chat span,
    then one execute_tool span per (tool, args, result, fails). Returns the trace id (hex)."""
    from opentelemetry.trace import Status, StatusCode

    with tracer.start_as_current_span("invoke_agent shop-bot") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("gen_ai.agent.name", "otel-bot")
        root.set_attribute("gen_ai.agent.version", attrs.pop("version", "1.0"))
        root.set_attribute(
            "gen_ai.input.messages",
            json.dumps([{"role": "user", "parts": [{"type": "text", "content": task}]}]),
        )
        for k, v in attrs.items():
            root.set_attribute(k, v)
        with tracer.start_as_current_span("chat small-model") as chat:
            chat.set_attribute("gen_ai.operation.name", "chat")
            chat.set_attribute("gen_ai.usage.input_tokens", 50)
            chat.set_attribute("gen_ai.usage.output_tokens", 5)
        for i, (tool, args, result, fails) in enumerate(tools):
            with tracer.start_as_current_span(f"execute_tool {tool}") as t:
                t.set_attribute("gen_ai.operation.name", "execute_tool")
                t.set_attribute("gen_ai.tool.name", tool)
                t.set_attribute("gen_ai.tool.call.id", f"call-{i}")
                t.set_attribute("gen_ai.tool.call.arguments", json.dumps(args))
                if fails:
                    t.set_attribute("error.type", "tool_error")
                    t.set_status(Status(StatusCode.ERROR, f"{tool} failed"))
                else:
                    t.set_attribute("gen_ai.tool.call.result", json.dumps(result))
        root.set_attribute(
            "gen_ai.output.messages",
            json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "done"}]}]),
        )
        return format(root.get_span_context().trace_id, "032x")
