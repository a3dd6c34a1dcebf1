"""Where the code of an agent under test runs, so that nothing it does can stall or end the runner.

* In-process agents (a reference agent, ``module:callable``, ``openai:``) run in a
  worker thread with an event loop of their own (:func:`run_in_thread`). A blocking
  call (``time.sleep``, a synchronous HTTP client) stalls only that thread: the
  runner's loop keeps serving the other trials and enforces the deadline. The MCP
  session lives on the runner's loop; the agent reaches it through a
  :class:`LoopBridge`. Whatever the agent raises — ``SystemExit``, ``KeyboardInterrupt``
  raised by its own code, any ``BaseException`` — is caught in its thread and comes
  back as :class:`AgentExited` (or the exception itself), i.e. a failed trial.
  ``os._exit`` in an in-process agent cannot be intercepted by any Python code; run
  such an agent as ``cmd:``.
* ``cmd:`` agents run as a process in a process group of their own
  (:func:`run_command`); at the deadline, on cancellation and after the command
  returns, the whole group is killed, so a wrapper (``sh -c``, ``npx``, ``npm
  start``) leaves no orphan behind.

A trial whose suite sets no ``timeout_s`` gets :data:`DEFAULT_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "AgentExited",
    "CommandResult",
    "LoopBridge",
    "run_command",
    "run_in_thread",
]

DEFAULT_TIMEOUT_S = 300.0
"""Per-trial limit (seconds) when neither the scenario nor the suite defaults set ``timeout_s``."""


class AgentExited(Exception):
    """The agent raised a ``BaseException`` that is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``, ``GeneratorExit``): recorded as a crash of that trial."""


class LoopBridge:
    """Forwards the coroutine methods of `target` (which lives on `loop`) to that loop.

    The agent's thread awaits the bridged call; the call itself runs on the
    runner's loop, where the MCP session was opened. Other attributes are
    returned as they are.

    Args:
        target: e.g. an entered `mcp.Client`.
        loop: the loop `target` belongs to.
    """

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def bridged(*args: Any, **kwargs: Any) -> Any:
            future = asyncio.run_coroutine_threadsafe(attr(*args, **kwargs), self._loop)
            return await asyncio.wrap_future(future)

        return bridged


async def run_in_thread(fn: Callable[..., Any], *args: Any, timeout: float, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` (awaited if it returns an awaitable) in a new thread and loop.

    Args:
        fn: the agent callable.
        timeout: seconds; then the agent's task is cancelled in its loop and
            `TimeoutError` is raised here (a thread blocked in C code is left to
            finish on its own: it is a daemon and its late results are dropped).

    Returns:
        What the agent returned.

    Raises:
        TimeoutError: the deadline passed.
        AgentExited: the agent raised a non-`Exception` `BaseException`.
        Exception: whatever the agent raised.
    """
    result: concurrent.futures.Future[Any] = concurrent.futures.Future()
    started = threading.Event()
    holder: dict[str, Any] = {}

    def deliver(ok: bool, value: Any) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if ok:
                result.set_result(value)
            else:
                result.set_exception(value)

    def main() -> None:
        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        asyncio.set_event_loop(loop)
        try:

            async def call() -> Any:
                holder["task"] = asyncio.current_task()
                started.set()
                value = fn(*args, **kwargs)
                return await value if inspect.isawaitable(value) else value

            deliver(True, loop.run_until_complete(call()))
        except Exception as e:
            deliver(False, e)
        except BaseException as e:  # SystemExit & co. must not leave this thread
            deliver(False, AgentExited(f"agent raised {type(e).__name__}({e})"))
        finally:
            started.set()
            with contextlib.suppress(BaseException):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=5))
            with contextlib.suppress(BaseException):
                loop.close()

    thread = threading.Thread(target=main, name="agentlake-agent", daemon=True)
    thread.start()
    try:
        return await asyncio.wait_for(asyncio.wrap_future(result), timeout)
    except BaseException:
        loop, task = holder.get("loop"), holder.get("task")
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(task.cancel)
        raise


class CommandResult:
    """What a command printed and how it exited."""

    def __init__(self, returncode: int | None, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def run_command(
    argv: Sequence[str], env: Mapping[str, str], timeout: float, on_exit: Callable[[], None] | None = None
) -> CommandResult:
    """Run a command in its own process group; kill the whole group when it is over.

    Args:
        argv: the command and its arguments.
        env: its environment.
        timeout: seconds; then the group is killed and `TimeoutError` raised.
        on_exit: called once the process has ended (or been killed), before returning or raising.

    Returns:
        The exit code and the decoded output.

    Raises:
        TimeoutError: the deadline passed (the group was killed).
        OSError: the command could not be started.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        start_new_session=True,  # its own session and process group: pgid == pid
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        _kill_group(proc.pid)  # grandchildren of a wrapper die with it
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(proc.wait(), 5)
        if on_exit is not None:
            on_exit()
    return CommandResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
