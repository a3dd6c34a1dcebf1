"""OpenTelemetry interop: an OTLP/HTTP endpoint that turns GenAI spans into AgentLake
events, and reward scores exported as ``gen_ai.evaluation.result`` events."""

from agentlake.otel._assemble import AddResult, Finished, Overloaded, TraceAssembler, message_text
from agentlake.otel._evaluation import EVENT_NAME, evaluation_records, evaluation_request, read_final_rewards
from agentlake.otel._server import IngestStats, OtlpIngest, create_app
from agentlake.otel._spool import Spool, SpoolLocked
from agentlake.otel._wire import PayloadError, Span, decompress, parse_traces

__all__ = [
    "EVENT_NAME",
    "AddResult",
    "Finished",
    "IngestStats",
    "OtlpIngest",
    "Overloaded",
    "PayloadError",
    "Span",
    "Spool",
    "SpoolLocked",
    "TraceAssembler",
    "create_app",
    "decompress",
    "evaluation_records",
    "evaluation_request",
    "message_text",
    "parse_traces",
    "read_final_rewards",
]
