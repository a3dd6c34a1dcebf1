"""A small async client for OpenAI-compatible chat completions (``POST {base_url}/chat/completions``).

It speaks the wire format shared by OpenAI, vLLM, Ollama, LiteLLM and most local
servers, and nothing more: one request, one parsed answer. Rate limits (429),
server errors (5xx) and transport failures are retried a bounded number of times
with exponential backoff; every other failure raises `LLMError` with a one-line
message saying what went wrong and where.

    async with ChatClient.from_env() as llm:
        reply = await llm.complete([{"role": "user", "content": "Hi"}])
        print(reply.content, reply.tokens_in, reply.tokens_out)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["DEFAULT_BASE_URL", "ChatClient", "ChatResponse", "LLMError", "message_text"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
"""Where `ChatClient.from_env` points when ``OPENAI_BASE_URL`` is not set."""

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 30.0


class LLMError(RuntimeError):
    """A chat completion that failed for good (after the retries, when retrying made sense).

    Attributes:
        status: the HTTP status of the last answer, or None when there was none
            (transport failure, unusable body).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ChatResponse:
    """One parsed chat completion.

    Attributes:
        message: ``choices[0].message`` as sent by the server (``role``, ``content``,
            maybe ``tool_calls``).
        tokens_in: ``usage.prompt_tokens``, None when the server does not report usage.
        tokens_out: ``usage.completion_tokens``, None when not reported.
        raw: the whole decoded response body.
    """

    message: dict[str, Any]
    tokens_in: int | None = None
    tokens_out: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def content(self) -> str:
        """The message text; ``""`` when the model sent none (e.g. only tool calls)."""
        return message_text(self.message)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The message's ``tool_calls`` (an empty list when there are none)."""
        calls = self.message.get("tool_calls")
        return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message whose ``content`` is a string, a list of parts, or null.

    Args:
        message: an OpenAI chat message.

    Returns:
        The text (text parts joined without separator), ``""`` when there is none.
    """
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


class ChatClient:
    """Async client of one model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    The underlying `httpx.AsyncClient` is created on first use; close it with
    `aclose()` or use the client as an async context manager.

    Args:
        base_url: API root including the version, e.g. ``https://api.openai.com/v1``
            or ``http://127.0.0.1:8000/v1``; requests go to ``{base_url}/chat/completions``.
        api_key: sent as ``Authorization: Bearer <key>``; None or ``""`` sends no header
            (local servers often need none).
        model: the model name put in every request (overridable per call).
        timeout: seconds allowed for one HTTP attempt.
        max_retries: extra attempts after a 429, a 5xx or a transport failure; 0 disables retries.
        backoff_s: wait before the first retry; it doubles on each retry (capped at 30 s).
            A numeric ``Retry-After`` header takes precedence, within the same cap.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout: float = 60.0,
        *,
        max_retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        if not model:
            raise ValueError("ChatClient needs a model name (set AGENTLAKE_LLM_MODEL or pass model=)")
        if max_retries < 0 or backoff_s < 0:
            raise ValueError("max_retries and backoff_s must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def from_env(
        cls,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 60.0,
    ) -> ChatClient:
        """Build a client from ``OPENAI_BASE_URL``, ``OPENAI_API_KEY`` and ``AGENTLAKE_LLM_MODEL``.

        Arguments that are given win over the environment.

        Args:
            base_url: overrides ``OPENAI_BASE_URL`` (default `DEFAULT_BASE_URL`).
            api_key: overrides ``OPENAI_API_KEY`` (default: no key).
            model: overrides ``AGENTLAKE_LLM_MODEL`` (required one way or the other).
            timeout: seconds allowed for one HTTP attempt.

        Returns:
            The client.

        Raises:
            ValueError: no model name was given nor found in the environment.
        """
        return cls(
            base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
            api_key if api_key is not None else os.environ.get("OPENAI_API_KEY"),
            model or os.environ.get("AGENTLAKE_LLM_MODEL", ""),
            timeout,
        )

    @property
    def url(self) -> str:
        """The endpoint every request is posted to."""
        return f"{self.base_url}/chat/completions"

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        temperature: float = 0,
        seed: int | None = None,
        *,
        model: str | None = None,
    ) -> ChatResponse:
        """Ask for one chat completion.

        Args:
            messages: the conversation in OpenAI chat format.
            tools: OpenAI function tools offered to the model; None or empty sends none.
            temperature: sampling temperature.
            seed: sent as ``seed`` when given (servers that support it sample reproducibly).
            model: use this model instead of the client's for this call.

        Returns:
            The first choice's message with the token usage.

        Raises:
            LLMError: a non-retryable HTTP error, retries exhausted, a body that is not
                JSON, or a response without ``choices[0].message``.
        """
        body: dict[str, Any] = {
            "model": model or self.model,
            "messages": [dict(m) for m in messages],
            "temperature": temperature,
        }
        if tools:
            body["tools"] = [dict(t) for t in tools]
        if seed is not None:
            body["seed"] = seed
        response = await self._post(body)
        return self._parse(response)

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        http = self._client()
        attempt = 0
        while True:
            try:
                response = await http.post(self.url, json=body, headers=headers)
            except httpx.TransportError as e:
                if attempt >= self.max_retries:
                    raise LLMError(
                        f"chat completion at {self.url} failed after {attempt + 1} attempt(s): "
                        f"{type(e).__name__}: {_one_line(str(e)) or 'no detail'}"
                    ) from e
                delay = self._delay(attempt, None)
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in _RETRY_STATUS or attempt >= self.max_retries:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise LLMError(
                        f"chat completion at {self.url} failed{tries}: HTTP {response.status_code}: "
                        f"{_error_detail(response)}",
                        status=response.status_code,
                    )
                delay = self._delay(attempt, response.headers.get("retry-after"))
            attempt += 1
            await asyncio.sleep(delay)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), _MAX_BACKOFF_S)
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        return float(min(self.backoff_s * 2**attempt, _MAX_BACKOFF_S))

    def _parse(self, response: httpx.Response) -> ChatResponse:
        where = f"chat completion at {self.url}"
        try:
            raw = response.json()
        except ValueError as e:
            raise LLMError(
                f"{where} returned a body that is not JSON: {_one_line(response.text)[:200]!r}",
                status=response.status_code,
            ) from e
        if not isinstance(raw, dict):
            raise LLMError(f"{where} returned JSON that is not an object", status=response.status_code)
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise LLMError(f"{where} returned no choices", status=response.status_code)
        first = choices[0]
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(message, dict):
            raise LLMError(f"{where} returned a choice without a message", status=response.status_code)
        usage = raw.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return ChatResponse(
            message=message,
            tokens_in=_int_or_none(usage.get("prompt_tokens")),
            tokens_out=_int_or_none(usage.get("completion_tokens")),
            raw=raw,
        )

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP connections (the client can be used again afterwards)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error_detail(response: httpx.Response) -> str:
    """The server's error message (OpenAI's ``{"error": {"message": ...}}``), else the body start."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return _one_line(str(err["message"]))[:300]
        if isinstance(err, str) and err:
            return _one_line(err)[:300]
    text = _one_line(response.text)[:300]
    return text or response.reason_phrase or "no body"
