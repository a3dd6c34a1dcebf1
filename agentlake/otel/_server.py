"""The OTLP/HTTP trace endpoint: ``POST /v1/traces`` (protobuf or JSON) -> AgentLake events.

Spans are buffered per trace by the `TraceAssembler` and logged to the `Spool`
before the exporter gets its 200; a background task emits finished trajectories
through the SDK's emitter (Kafka, spilling to disk when the broker is away) and,
once Kafka acknowledged their events, marks them finished in the spool. A
restarted endpoint replays the spool, so no accepted span is lost to a crash; a
trajectory emitted but not yet marked is emitted again, with the same event ids.
Every bad request gets a 4xx with the reason in a ``google.rpc.Status`` body;
nothing a client sends stops the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agentlake.otel._assemble import Finished, Overloaded, TraceAssembler
from agentlake.otel._spool import Spool
from agentlake.otel._wire import JSON, PayloadError, decompress, error_body, parse_traces, response_body
from agentlake.schemas import codec
from agentlake.sdk import Emitter, KafkaEmitter
from agentlake.settings import Settings

log = logging.getLogger("agentlake.otel")


@dataclass
class IngestStats:
    requests: int = 0
    spans_accepted: int = 0
    spans_rejected: int = 0
    spans_ignored: int = 0
    spans_replayed: int = 0
    trajectories: int = 0
    events: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    ended_by: dict[str, int] = field(default_factory=dict)


class OtlpIngest:
    """State of one endpoint: the assembler, its spool, the emitter, counters.

    Opening replays what the spool holds (spans of traces a previous process accepted
    and did not finish) into the assembler, with their original arrival times.

    Args:
        settings: limits (``otel_*``), the spool (``otel_spool_*``) and where events go.
        emitter: defaults to a `KafkaEmitter` on the settings' bootstrap servers.

    Raises:
        SpoolLocked: another endpoint uses the same spool folder.
    """

    def __init__(self, settings: Settings, emitter: Emitter | None = None) -> None:
        self.settings = settings
        self.assembler = TraceAssembler(
            end_grace_s=settings.otel_end_grace_s,
            idle_timeout_s=settings.otel_idle_timeout_s,
            max_spans_per_trace=settings.otel_max_spans_per_trace,
            max_traces=settings.otel_max_traces,
            max_payload=settings.max_payload_bytes,
            tenant=settings.otel_tenant,
        )
        self.codec = codec()
        self.stats = IngestStats()
        self._unmarked: list[str] = []  # emitted, not yet marked finished in the spool
        self.spool = Spool(
            settings.otel_spool_path,
            fsync=settings.otel_spool_fsync,
            segment_bytes=settings.otel_spool_segment_bytes,
        )
        try:
            self._replay()
            self._owns_emitter = emitter is None
            self.emitter: Emitter = emitter or KafkaEmitter(
                settings.bootstrap_servers, settings.spill_dir / "otel", client_id="agentlake-otel"
            )
        except BaseException:
            self.spool.close()
            raise

    def _replay(self) -> None:
        batches, done = self.spool.take_recovered()
        for arrival_us, spans in batches:
            self.stats.spans_replayed += self.assembler.add(spans, arrival_us, limit_traces=False).accepted
        self.assembler.remember_done(done)
        if batches:
            log.warning(
                "replayed %d span(s) of %d trace(s) from the spool %s",
                self.stats.spans_replayed,
                self.assembler.pending,
                self.spool.folder,
            )

    def accept(self, body: bytes, content_type: str | None, encoding: str | None) -> tuple[int, bytes, str]:
        """Handle one export request; returns (HTTP status, body, content type). Never raises."""
        ctype = (
            JSON if (content_type or "").split(";")[0].strip().lower() == JSON else "application/x-protobuf"
        )
        self.stats.requests += 1
        try:
            raw = decompress(body, encoding, self.settings.otel_max_body_bytes)
            spans = parse_traces(raw, content_type)
            now_us = _now_us()
            res = self.assembler.add(spans, now_us)
        except PayloadError as e:
            return self._error(e.status, str(e), ctype)
        except Overloaded as e:
            return self._error(503, str(e), ctype)
        except Exception as e:  # a bug here must not take the endpoint down
            log.exception("otlp request failed")
            return self._error(400, f"could not process the request: {type(e).__name__}: {e}", ctype)
        try:
            self.spool.append(res.kept, now_us)
        except OSError as e:  # in memory only: have the exporter retry (a duplicate replaces itself)
            log.error("cannot write the spool %s: %s", self.spool.folder, e)
            return self._error(503, f"cannot write the spool ({e}); retry later", ctype)
        self.stats.spans_accepted += res.accepted
        self.stats.spans_rejected += res.rejected
        self.stats.spans_ignored += res.ignored
        msg = "; ".join(sorted(set(res.reasons))[:5])
        return 200, response_body(ctype, rejected=res.rejected, message=msg), ctype

    def _error(self, status: int, message: str, ctype: str) -> tuple[int, bytes, str]:
        self.stats.errors[status] = self.stats.errors.get(status, 0) + 1
        log.info("otlp request refused (%d): %s", status, message)
        return status, error_body(ctype, status, message), ctype

    def tick(self, now_us: int | None = None) -> int:
        """Emit the trajectories that are due; returns how many."""
        done = self.assembler.due(_now_us() if now_us is None else now_us)
        for f in done:
            self.emit(f)
        return len(done)

    def emit(self, f: Finished) -> None:
        key = f.trajectory_id.encode()
        for record, topic, data in f.events:
            value = self.codec.encode_record(record, data)
            self.emitter.emit(self.settings.topic(topic), key, value)
        self.stats.trajectories += 1
        self.stats.events += len(f.events)
        self.stats.ended_by[f.reason] = self.stats.ended_by.get(f.reason, 0) + 1
        self._unmarked.append(f.trajectory_id)

    def take_unmarked(self) -> list[str]:
        """Trace ids emitted since the last call; pass them to `mark_finished` after a flush."""
        ids, self._unmarked = self._unmarked, []
        return ids

    def mark_finished(self, trace_ids: list[str], flushed: bool) -> int:
        """Record in the spool that these trajectories are out, if the emitter `flushed` since
        they were emitted (else they wait for the next call). Returns how many were marked."""
        if not trace_ids:
            return 0
        if flushed:
            try:
                self.spool.finish(trace_ids, _now_us())
                return len(trace_ids)
            except OSError as e:
                log.error("cannot write the spool %s: %s", self.spool.folder, e)
        self._unmarked[:0] = trace_ids
        return 0

    def confirm(self, timeout: float = 5.0) -> int:
        """Flush the emitter (up to `timeout` s) and mark what it took as finished; returns how many."""
        ids = self.take_unmarked()
        return self.mark_finished(ids, bool(ids) and self.emitter.flush(timeout))

    def close(self) -> None:
        """Emit the pending traces whose root arrived, flush the emitter, mark them finished.

        Root-less traces stay in the spool: the next endpoint on it continues them.
        """
        for f in self.assembler.drain(rootless=False):
            self.emit(f)
        try:
            self.confirm(10)
            if self._owns_emitter:
                self.emitter.close(10)
        finally:
            self.spool.close()

    def health(self) -> dict[str, Any]:
        s = self.stats
        return {
            "status": "ok",
            "pending_traces": self.assembler.pending,
            "requests": s.requests,
            "spans_accepted": s.spans_accepted,
            "spans_rejected": s.spans_rejected,
            "spans_ignored": s.spans_ignored,
            "spans_replayed": s.spans_replayed,
            "trajectories": s.trajectories,
            "events": s.events,
            "errors": {str(k): v for k, v in s.errors.items()},
            "ended_by": dict(s.ended_by),
            "spool": {**self.spool.stats(), "unmarked": len(self._unmarked)},
        }


def _now_us() -> int:
    return time.time_ns() // 1000


async def _read_limited(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadError(413, f"body of {declared} bytes exceeds {limit} (AGENTLAKE_OTEL_MAX_BODY_BYTES)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadError(413, f"body exceeds {limit} bytes (AGENTLAKE_OTEL_MAX_BODY_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings, ingest: OtlpIngest | None = None, tick_s: float = 0.2) -> Any:
    """The Starlette app: ``POST /v1/traces``, ``GET /healthz``.

    The ingest (and its emitter) is created at startup unless given, and closed at shutdown.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    holder: dict[str, OtlpIngest] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        ing: OtlpIngest = ingest if ingest is not None else await asyncio.to_thread(OtlpIngest, settings)
        holder["ingest"] = ing
        app.state.ingest = ing

        async def ticker() -> None:
            while True:
                await asyncio.sleep(tick_s)
                try:
                    ing.tick()
                except Exception:
                    log.exception("emitting finished traces failed")

        async def marker() -> None:
            # the flush waits in a thread, so that a broker away never delays `ticker`
            while True:
                await asyncio.sleep(tick_s)
                ids = ing.take_unmarked()
                if not ids:
                    continue
                try:
                    flushed = await asyncio.to_thread(ing.emitter.flush, 5.0)
                except asyncio.CancelledError:
                    ing.mark_finished(ids, False)  # back in line: `close` marks them
                    raise
                except Exception:
                    log.exception("flushing the emitter failed")
                    flushed = False
                if ing.mark_finished(ids, flushed) == 0:
                    await asyncio.sleep(5.0)  # the broker is away: the events wait in the spill

        tasks = [asyncio.create_task(ticker()), asyncio.create_task(marker())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(ing.close)

    async def traces(request: Request) -> Response:
        ing = holder["ingest"]
        ctype = request.headers.get("content-type")
        try:
            body = await _read_limited(request, settings.otel_max_body_bytes)
        except PayloadError as e:
            out = JSON if (ctype or "").startswith(JSON) else "application/x-protobuf"
            status, data, media = ing._error(e.status, str(e), out)
            return Response(data, status_code=status, media_type=media)
        status, data, media = ing.accept(body, ctype, request.headers.get("content-encoding"))
        headers = {"Retry-After": "5"} if status == 503 else None
        return Response(data, status_code=status, media_type=media, headers=headers)

    async def health(request: Request) -> Response:
        return JSONResponse(holder["ingest"].health())

    return Starlette(
        routes=[Route("/v1/traces", traces, methods=["POST"]), Route("/healthz", health, methods=["GET"])],
        lifespan=lifespan,
    )
