"""LLM-driven agents and simulated users for simulation runs.

- `AgentFn` is the shape of an agent under test: it gets the task, the traced MCP
  session, its trajectory and (optionally) a `UserChannel` to talk to the user.
- `OpenAIChatAgent` is a generic tool-calling agent over any OpenAI-compatible
  model (`agentlake.sim.llm.ChatClient`) and any MCP server.
- `ScriptedUser` and `PersonaUser` play the user: canned replies, or an LLM given
  instructions and facts it reveals when asked. Failures of the simulated user
  raise `UserSimulationError`, so a grader blames the user simulation, not the agent.

What an `OpenAIChatAgent` records (one `AgentStep` per model turn, carrying the
turn's token usage): ``thought`` for a turn that calls tools (its text, possibly
empty), ``message`` for a question put to the user, ``final`` for the answer.
Tool calls are recorded by the `TracedSession`; a call whose arguments are not a
JSON object is recorded as a failed call of kind ``invalid_arguments`` with the raw
arguments text. Each reply of the user is a ``user`` step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from agentlake.sdk import TracedSession, Trajectory, result_text, result_value
from agentlake.sim.export import provider_safe_names, tool_message_content, tools_to_openai
from agentlake.sim.llm import ChatClient, message_text

__all__ = [
    "BUDGET_EXHAUSTED",
    "DEFAULT_SYSTEM_PROMPT",
    "AgentFn",
    "OpenAIChatAgent",
    "PersonaUser",
    "ScriptedUser",
    "UserChannel",
    "UserSimulationError",
    "list_tool_specs",
]

DEFAULT_SYSTEM_PROMPT = (
    "You are a customer support agent. Use the tools to look things up and to act on the "
    "user's request. If information you need is missing, ask the user one short question. "
    "When the request is handled, answer briefly with what you did."
)

BUDGET_EXHAUSTED = "step budget exhausted"
"""The final answer of a trajectory that ran out of model turns (outcome ``failure``)."""

DONE = "DONE"
"""What a persona's model answers, alone, when the simulated user has nothing more to say."""


class UserSimulationError(RuntimeError):
    """The simulated user failed (its LLM errored or answered nothing usable): not the agent's fault."""


class UserChannel(Protocol):
    """The user an agent may talk to during a task."""

    async def reply(self, agent_message: str) -> str | None:
        """Answer one message of the agent.

        Args:
            agent_message: what the agent said to the user.

        Returns:
            The user's next message, or None when the user has nothing more to say.
        """
        ...


class AgentFn(Protocol):
    """An agent under test: does `task` with `tools`, records into `trajectory`, returns its answer.

    The agent ends the trajectory itself. `user`, when given, is the user it may ask
    questions; without it the task text is all it gets.
    """

    async def __call__(
        self,
        task: str,
        tools: TracedSession,
        trajectory: Trajectory,
        /,
        user: UserChannel | None = None,
    ) -> str: ...


class OpenAIChatAgent:
    """A tool-calling agent: an OpenAI-compatible model driving the tools of one MCP server.

    Each call runs one task. The loop: list the server's tools, send the system prompt
    and the task, then for every model turn

    - with tool calls: record a ``thought`` step, run the calls in order through the
      traced session and send each result back as a ``tool`` message (arguments that
      are not a JSON object get an error message back instead, and the loop goes on);
    - without tool calls, when a `user` is given and the text ends with ``?``: the
      question goes to the user (a ``message`` step) and the reply (a ``user`` step)
      comes back as a user message; if the user has nothing more to say, the
      question is the final answer;
    - otherwise the text is the final answer: a ``final`` step, the trajectory ends
      with outcome ``success``.

    After `max_steps` model turns without a final answer the trajectory ends with
    outcome ``failure`` and final answer `BUDGET_EXHAUSTED`. A trajectory that is
    already ended is never ended again. Errors of the model or of the user propagate
    and leave the trajectory open (its context manager ends it with outcome ``error``).

    Args:
        client: the model.
        system_prompt: the system message.
        max_steps: model turns allowed per task (questions to the user count).
        temperature: sampling temperature of every turn.
        seed: sampling seed sent with every turn (None sends none).
    """

    def __init__(
        self,
        client: ChatClient,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        max_steps: int = 10,
        *,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.client = client
        self.system_prompt = system_prompt
        self.max_steps = max_steps
        self.temperature = temperature
        self.seed = seed
        self._real_names: dict[str, str] = {}

    async def __call__(
        self,
        task: str,
        tools: TracedSession,
        trajectory: Trajectory,
        /,
        user: UserChannel | None = None,
        seed: int | None = None,
    ) -> str:
        """Run one task to its end.

        Args:
            task: the user's request.
            tools: the traced MCP session (its `list_tools` is forwarded to the client).
            trajectory: where steps are recorded; ended by this call unless an error escapes.
            user: the user to ask questions, or None.
            seed: sampling seed of this task (the trial's seed), overriding the constructor's.

        Returns:
            The final answer, or `BUDGET_EXHAUSTED`.

        Raises:
            LLMError: the model could not be reached or answered garbage.
            UserSimulationError: the simulated user failed.
        """
        specs = await list_tool_specs(tools)
        # MCP allows names providers reject (`orders.refund`): send safe aliases, map them back
        alias = provider_safe_names([spec["name"] for spec in specs])
        self._real_names = {safe: real for real, safe in alias.items()}
        openai_tools = tools_to_openai([{**spec, "name": alias[spec["name"]]} for spec in specs])
        seed = seed if seed is not None else self.seed
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": task},
        ]
        for _ in range(self.max_steps):
            response = await self.client.complete(
                messages, tools=openai_tools or None, temperature=self.temperature, seed=seed
            )
            text = message_text(response.message)
            usage = {"tokens_in": response.tokens_in, "tokens_out": response.tokens_out}
            calls = _with_ids(response.tool_calls, len(messages))
            assistant: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                assistant["tool_calls"] = calls
            messages.append(assistant)

            if calls:
                trajectory.step("thought", text, **usage)
                for call in calls:
                    content = await self._run_call(call, tools, trajectory)
                    messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
                continue

            if user is not None and text.rstrip().endswith("?"):
                try:
                    reply = await user.reply(text)
                except BaseException:
                    trajectory.step("message", text, **usage)
                    raise
                if reply is not None:
                    trajectory.step("message", text, **usage)
                    trajectory.step("user", reply)
                    messages.append({"role": "user", "content": reply})
                    continue

            trajectory.step("final", text, **usage)
            if not trajectory.ended:
                trajectory.end("success", final_answer=text)
            return text

        if not trajectory.ended:
            trajectory.end("failure", final_answer=BUDGET_EXHAUSTED)
        return BUDGET_EXHAUSTED

    async def _run_call(self, call: Mapping[str, Any], tools: TracedSession, trajectory: Trajectory) -> str:
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        name = str(function.get("name") or "")
        name = self._real_names.get(name, name)
        raw = function.get("arguments")
        arguments, problem = _parse_arguments(raw)
        if arguments is None:
            message = f"arguments of {name or 'the call'} {problem}; send a JSON object matching its schema"
            recorded = trajectory.tool_call(tools.server_id, name, raw if isinstance(raw, str) else repr(raw))
            recorded.error(message, kind="invalid_arguments")
            return tool_message_content(None, is_error=True, error=message)
        try:
            result = await tools.call_tool(name, arguments)
        except Exception as e:  # recorded by TracedSession; the model gets to react
            return tool_message_content(None, is_error=True, error=f"{type(e).__name__}: {e}")
        return tool_message_content(
            result_value(result), is_error=bool(result.is_error), error=result_text(result)
        )


def _parse_arguments(raw: Any) -> tuple[dict[str, Any] | None, str]:
    if isinstance(raw, dict):
        return raw, ""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}, ""
    if not isinstance(raw, str):
        return None, f"are a {type(raw).__name__}, not a JSON string"
    try:
        value = json.loads(raw)
    except ValueError as e:
        return None, f"are not valid JSON ({e})"
    if not isinstance(value, dict):
        return None, f"are JSON {type(value).__name__}, not an object"
    return value, ""


def _with_ids(calls: list[dict[str, Any]], salt: int) -> list[dict[str, Any]]:
    """The calls with an ``id`` each (some servers omit it; tool messages must reference one)."""
    return [c if c.get("id") else {**c, "id": f"call_{salt}_{i}"} for i, c in enumerate(calls)]


async def list_tool_specs(session: Any) -> list[dict[str, Any]]:
    """Every tool of an MCP session as ``{"name", "description", "input_schema"}`` (all pages).

    Args:
        session: an entered `mcp.Client`, `ClientSession` or `TracedSession`.

    Returns:
        The tool specs, in the server's order.
    """
    specs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
        specs.extend(
            {"name": t.name, "description": t.description or "", "input_schema": dict(t.input_schema)}
            for t in page.tools
        )
        cursor = getattr(page, "next_cursor", None)
        if not cursor:
            return specs


class ScriptedUser:
    """A user who answers with canned turns, in order, then has nothing more to say.

    Args:
        turns: the replies, one per agent message.

    Attributes:
        received: the agent messages received so far.
    """

    def __init__(self, turns: list[str]) -> None:
        self.turns = list(turns)
        self.received: list[str] = []

    async def reply(self, agent_message: str) -> str | None:
        """The next canned turn, or None once they are used up."""
        self.received.append(agent_message)
        index = len(self.received) - 1
        return self.turns[index] if index < len(self.turns) else None


class PersonaUser:
    """A user played by an LLM: instructions, facts it reveals when asked, a turn limit.

    The model sees a system prompt built from `instructions` and `hidden_info`, then
    the conversation from the user's side: the agent's messages as ``user`` turns,
    its own replies as ``assistant`` turns. It answers ``DONE`` alone when it has
    nothing more to say.

    Args:
        client: the model playing the user (may be the agent's client).
        instructions: who the user is and what they want.
        hidden_info: facts the user knows but gives only when asked (text, or a
            mapping rendered as JSON).
        max_turns: replies allowed; after them `reply` returns None.
        opening: the user's first message (usually the task), shown as its own turn.
        temperature: sampling temperature.
        seed: sampling seed (None sends none).
        model: the model name, when it differs from the client's.
    """

    def __init__(
        self,
        client: ChatClient,
        instructions: str,
        hidden_info: str | Mapping[str, Any] = "",
        max_turns: int = 5,
        *,
        opening: str | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
        model: str | None = None,
    ) -> None:
        self.client = client
        self.instructions = instructions
        self.hidden_info = hidden_info if isinstance(hidden_info, str) else json.dumps(dict(hidden_info))
        self.max_turns = max_turns
        self.temperature = temperature
        self.seed = seed
        self.model = model
        self.turns = 0
        self.history: list[dict[str, Any]] = []
        if opening is not None:
            self.history.append({"role": "assistant", "content": opening})

    @property
    def system_prompt(self) -> str:
        """The system message the persona's model gets."""
        parts = [
            "You are simulating a user talking to a support agent. Stay in character and write only "
            "the user's next message, briefly.",
            f"Who you are and what you want:\n{self.instructions}",
        ]
        if self.hidden_info:
            parts.append(f"Facts you know; share one only when the agent asks for it:\n{self.hidden_info}")
        parts.append(f"When your request is handled or you have nothing more to say, reply exactly {DONE}.")
        return "\n\n".join(parts)

    async def reply(self, agent_message: str) -> str | None:
        """Answer the agent as the persona.

        Args:
            agent_message: what the agent said.

        Returns:
            The persona's reply, or None after `max_turns` replies or when the model says ``DONE``.

        Raises:
            UserSimulationError: the persona's model failed or answered no text.
        """
        if self.turns >= self.max_turns:
            return None
        self.history.append({"role": "user", "content": agent_message})
        try:
            response = await self.client.complete(
                [{"role": "system", "content": self.system_prompt}, *self.history],
                temperature=self.temperature,
                seed=self.seed,
                model=self.model,
            )
        except Exception as e:
            self.history.pop()  # keep the history consistent if the caller tries again
            raise UserSimulationError(f"simulated user's model failed: {e}") from e
        text = message_text(response.message).strip()
        if not text:
            self.history.pop()
            raise UserSimulationError("simulated user's model answered no text")
        self.turns += 1
        if text == DONE:
            return None
        self.history.append({"role": "assistant", "content": text})
        return text
