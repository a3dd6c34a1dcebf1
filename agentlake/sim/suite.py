"""Simulation suites: the YAML format, its validation, and expansion into trials.

A suite is a list of scenarios; a scenario is a task template plus variables,
perturbations, an initial state for the staging server, success criteria and
budgets. :func:`expand` turns a suite into concrete :class:`Trial` s, one per
(scenario x variable binding x trial index), each with a stable seed, so the
same suite and base seed always give the same trials.

Templating (task, paraphrase variants, distractor sentences, initial state,
criteria, user turns): ``{name}`` is replaced by the value of variable
``name``; ``{{`` and ``}}`` stand for literal braces; any other brace (a regex
quantifier such as ``\\d{3}``, JSON) is left alone. A string that is exactly
one placeholder (``"{oid}"``) becomes the variable's value with its type, so
integers stay integers. Mapping keys are always rendered as strings (states
are JSON). Every placeholder must name a declared variable; this is checked
when the suite is loaded.

The only I/O is reading the YAML file in :func:`load_suite`, and importing a
state generator in :func:`render_state`.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import itertools
import json
import math
import random
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    PlainValidator,
    PositiveFloat,
    PositiveInt,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from agentlake._files import UserFileError, read_user_text
from agentlake._validation import first_error
from agentlake.sim.metrics import GateSpec
from agentlake.sim.perturb import Distractor, Paraphrase, Perturbation, Reorder, Typos, apply_perturbations
from agentlake.sim.templating import Scalar

__all__ = [
    "Budgets",
    "Criteria",
    "Defaults",
    "Distractor",
    "FinalAnswerCheck",
    "IntRange",
    "Paraphrase",
    "Persona",
    "Perturbation",
    "Reorder",
    "Samples",
    "Scalar",
    "Scenario",
    "StateCheck",
    "Suite",
    "SuiteError",
    "ToolCallSpec",
    "ToolCallsCheck",
    "Trial",
    "Typos",
    "UserSpec",
    "Variables",
    "bindings",
    "expand",
    "load_suite",
    "parse_suite",
    "perturb_task",
    "render_state",
    "render_text",
    "render_value",
    "stable_seed",
    "validate_suite",
    "variant_id",
]


from agentlake.sim.templating import (
    SuiteError,
    _unknown_variable,
    render_text,
    render_value,
    stable_seed,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _scalar(v: Any) -> Scalar:
    if isinstance(v, str | int | float | bool):
        return v
    raise ValueError(f"expected a string, number or boolean, got {type(v).__name__}")


ScalarField = Annotated[Scalar, PlainValidator(_scalar)]


class Budgets(_Model):
    """Limits of one trial; unset means unlimited (or inherited from the suite defaults)."""

    max_steps: PositiveInt | None = None
    max_tool_calls: NonNegativeInt | None = None
    timeout_s: PositiveFloat | None = None


class IntRange(_Model):
    """Integers ``min..max`` inclusive, drawn uniformly."""

    min: int
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


def _sample_var_kind(v: Any) -> str:
    return "range" if isinstance(v, Mapping | IntRange) else "choices"


SampleVar = Annotated[
    Annotated[list[ScalarField], Field(min_length=1), Tag("choices")] | Annotated[IntRange, Tag("range")],
    Discriminator(_sample_var_kind),
]


class Samples(_Model):
    """``count`` distinct random bindings, drawn from a seeded RNG."""

    count: PositiveInt
    seed: int = 0
    vars: dict[str, SampleVar] = Field(min_length=1)

    @model_validator(mode="after")
    def _enough_combinations(self) -> Samples:
        space = math.prod(
            len(set(map(repr, v))) if isinstance(v, list) else v.max - v.min + 1 for v in self.vars.values()
        )
        if self.count > space:
            raise ValueError(f"count {self.count} exceeds the {space} distinct combinations of vars")
        return self


class Variables(_Model):
    """Either a ``grid`` (cartesian product, in declaration order) or ``samples``."""

    grid: dict[str, Annotated[list[ScalarField], Field(min_length=1)]] | None = None
    samples: Samples | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Variables:
        if (self.grid is None) == (self.samples is None):
            raise ValueError("set exactly one of grid or samples")
        for name, values in (self.grid or {}).items():
            seen = [str(v) for v in values]
            if len(set(seen)) != len(seen):
                raise ValueError(f"grid.{name}: values must be distinct")
        return self

    @property
    def names(self) -> set[str]:
        """The declared variable names."""
        return set(self.grid) if self.grid is not None else set(self.samples.vars if self.samples else {})


class StateCheck(_Model):
    """One assertion on the final state at a dotted ``path`` (e.g. ``orders.{oid}.status``).

    Exactly one of ``equals``, ``in``, ``not_equals``, ``exists`` is set.
    """

    path: str = Field(pattern=r"^[^.]+(\.[^.]+)*$")
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_equals: Any = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_op(self) -> StateCheck:
        ops = self.model_fields_set & {"equals", "in_", "not_equals", "exists"}
        if len(ops) != 1:
            raise ValueError("set exactly one of equals, in, not_equals, exists")
        return self

    @model_serializer(mode="wrap")
    def _dump_only_the_op(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # unset operators would read back as set ("equals: null" is a real check)
        op = self.op[0]
        keep = {"path", op, "in_"} if op == "in" else {"path", op}
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if k in keep}

    @property
    def op(self) -> tuple[str, Any]:
        """``(operator, operand)``, the operator being ``equals``, ``in``, ``not_equals`` or ``exists``."""
        name = next(iter(self.model_fields_set & {"equals", "in_", "not_equals", "exists"}))
        return name.rstrip("_"), getattr(self, name)


class ToolCallSpec(_Model):
    """An expected call: the tool name and a subset of its arguments."""

    tool: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)


class ToolCallsCheck(_Model):
    """Expected tool calls and how the actual ones must match them (see ``grading``)."""

    mode: Literal["strict", "unordered", "subset", "superset"] = "superset"
    calls: list[ToolCallSpec] = Field(default_factory=list)
    include_errors: bool = Field(
        default=False, description="also match calls that returned an error (ignored by default)"
    )

    @model_validator(mode="after")
    def _checks_something(self) -> ToolCallsCheck:
        # superset of nothing holds for any agent; strict/unordered/subset of nothing mean "no calls"
        if not self.calls and self.mode == "superset":
            raise ValueError(
                "checks nothing: list the expected calls (or use mode strict with no calls for 'no calls')"
            )
        return self


class FinalAnswerCheck(_Model):
    """Assertions on the agent's final answer."""

    contains: list[str] = Field(default_factory=list)
    not_contains: list[str] = Field(default_factory=list)
    regex: str | None = None
    equals: str | None = None
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _checks_something(self) -> FinalAnswerCheck:
        if not (self.contains or self.not_contains or self.regex is not None or self.equals is not None):
            raise ValueError("checks nothing: set contains, not_contains, regex or equals")
        return self

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"invalid regular expression: {e}") from None
        return v


class Criteria(_Model):
    """What makes a trial a success; every declared criterion must hold."""

    final_state: list[StateCheck] = Field(default_factory=list)
    tool_calls: ToolCallsCheck | None = None
    final_answer: FinalAnswerCheck | None = None
    outcome: Literal["success", "failure"] | None = None

    @model_validator(mode="after")
    def _something(self) -> Criteria:
        if not (self.final_state or self.tool_calls or self.final_answer or self.outcome):
            raise ValueError("declare at least one of final_state, tool_calls, final_answer, outcome")
        return self


class Persona(_Model):
    """An LLM-simulated user: instructions, facts it reveals only when asked, a turn limit."""

    instructions: str = Field(min_length=1)
    hidden_info: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    max_turns: PositiveInt = 10


class UserSpec(_Model):
    """The simulated user: ``scripted`` replies (one per agent turn) or a ``persona``."""

    scripted: list[str] | None = Field(default=None, min_length=1)
    persona: Persona | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> UserSpec:
        if (self.scripted is None) == (self.persona is None):
            raise ValueError("set exactly one of scripted or persona")
        return self


_GENERATOR_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Scenario(_Model):
    """One task under test, with its variations and success criteria."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    variables: Variables | None = None
    task: str = Field(min_length=1)
    perturbations: list[Perturbation] = Field(default_factory=list)
    initial_state: dict[str, Any] = Field(default_factory=dict)
    criteria: Criteria
    budgets: Budgets = Field(default_factory=Budgets)
    user: UserSpec | None = None
    server: str | None = None
    tags: list[str] = Field(default_factory=list)

    @staticmethod
    def _declared(info: ValidationInfo) -> set[str] | None:
        if "variables" not in info.data:
            return None  # variables failed to validate; that error is reported instead
        v: Variables | None = info.data["variables"]
        return v.names if v is not None else set()

    @field_validator("task", "initial_state", "criteria", "user")
    @classmethod
    def _known_variables(cls, value: Any, info: ValidationInfo) -> Any:
        declared = cls._declared(info)
        if declared is not None:
            err = _unknown_variable(value, declared)
            if err:
                raise ValueError(err)
        return value

    @field_validator("perturbations")
    @classmethod
    def _perturbations(
        cls, value: list[Paraphrase | Typos | Distractor | Reorder], info: ValidationInfo
    ) -> Any:
        if sum(isinstance(p, Paraphrase) for p in value) > 1:
            raise ValueError("at most one paraphrase perturbation")
        declared = cls._declared(info)
        if declared is not None:
            for i, p in enumerate(value):
                err = _unknown_variable(p, declared, f"[{i}]")
                if err:
                    raise ValueError(err)
        return value

    @field_validator("initial_state")
    @classmethod
    def _generator(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "$generator" in value:
            extra = set(value) - {"$generator", "args"}
            if extra:
                raise ValueError(f"a $generator state takes only $generator and args (got {sorted(extra)})")
            ref = value["$generator"]
            if not isinstance(ref, str) or not _GENERATOR_REF.match(ref):
                raise ValueError(f"$generator must be 'package.module:function' (got {ref!r})")
            if not isinstance(value.get("args", {}), Mapping):
                raise ValueError("$generator args must be a mapping")
        return value


class Defaults(_Model):
    """Suite-wide defaults a scenario may override."""

    budgets: Budgets = Field(default_factory=Budgets)
    server: str | None = None


class Suite(_Model):
    """A simulation suite: scenarios, how many trials each, and the CI gate."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    agent: str | None = Field(default=None, description="default agent under test, name@version")
    trials: PositiveInt = 5
    defaults: Defaults = Field(default_factory=Defaults)
    scenarios: list[Scenario] = Field(min_length=1)
    gate: GateSpec | None = None

    @field_validator("agent")
    @classmethod
    def _agent_ref(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
            raise ValueError(f"expected name@version, e.g. support-bot@1.0 (got {value!r})")
        return value

    @field_validator("scenarios")
    @classmethod
    def _unique_ids(cls, value: list[Scenario]) -> list[Scenario]:
        seen: set[str] = set()
        for s in value:
            if s.id in seen:
                raise ValueError(f"duplicate scenario id {s.id!r}")
            seen.add(s.id)
        return value


# --- loading ---------------------------------------------------------------------


def _one_line(err: ValidationError, source: str) -> str:
    path, reason = first_error(err)
    return " ".join(f"{source}: {path or '<root>'}: {reason}".split())


def validate_suite(data: Any, source: str = "<suite>") -> Suite:
    """Validate an already-parsed suite document.

    Args:
        data: The document (a mapping).
        source: Name used in error messages (usually the file name).

    Returns:
        The suite.

    Raises:
        SuiteError: One line, ``<source>: <field path>: <problem>``.
    """
    if not isinstance(data, Mapping):
        raise SuiteError(f"{source}: a suite must be a mapping with id and scenarios")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        raise SuiteError(_one_line(e, source)) from None
    check_generators(suite, source)
    return suite


STATE_ARGS_ATTR = "__state_args__"
"""Attribute of a state generator naming the pydantic model of its ``args`` (`state_generator`)."""

_G = TypeVar("_G", bound=Callable[..., Any])


def state_generator(args: type[BaseModel]) -> Callable[[_G], _G]:
    """Declare the model of a ``$generator``'s ``args`` (types, ranges), checked when a suite
    loads, for every variable binding, before any trial runs (`check_generators`)."""

    def mark(fn: _G) -> _G:
        setattr(fn, STATE_ARGS_ATTR, args)
        return fn

    return mark


def check_generators(suite: Suite, source: str = "<suite>") -> None:
    """Check every scenario's ``$generator`` as the runner will call it: importable, and its
    ``args``, rendered for each variable binding, accepted: by the generator's args model
    when it declares one (`state_generator`), else by its signature.

    Raises:
        SuiteError: One line, ``<source>: scenarios[i].initial_state.args.<arg>: <problem>``
            (``(with <binding>)`` when the problem depends on the variables).
    """
    for i, sc in enumerate(suite.scenarios):
        if "$generator" not in sc.initial_state:
            continue
        where = f"{source}: scenarios[{i}].initial_state"
        ref = sc.initial_state["$generator"]
        module_name, _, attr = ref.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except Exception as e:  # a module that fails on import is as unusable as a missing one
            raise SuiteError(f"{where}.$generator: cannot import {ref!r}: {type(e).__name__}: {e}") from None
        model = getattr(fn, STATE_ARGS_ATTR, None)
        for binding in bindings(sc):
            args = render_value(sc.initial_state.get("args", {}), binding)
            with_ = f" (with {variant_id(binding)})" if binding else ""
            if isinstance(model, type) and issubclass(model, BaseModel):
                try:
                    model.model_validate(args)
                except ValidationError as e:
                    path, reason = first_error(e)
                    field = f".args.{path}" if path else ".args"
                    raise SuiteError(" ".join(f"{where}{field}: {reason}{with_}".split())) from None
            else:
                try:
                    inspect.signature(fn).bind(**args)
                except TypeError as e:
                    raise SuiteError(f"{where}.args: {ref} does not take these args: {e}{with_}") from None
                except ValueError:  # no signature to check (a builtin): the run will tell
                    pass


def parse_suite(text: str, source: str = "<suite>") -> Suite:
    """Parse and validate suite YAML.

    Args:
        text: YAML text.
        source: Name used in error messages (usually the file name).

    Returns:
        The suite.

    Raises:
        SuiteError: One line naming the source and the field path, or the line and
            column of a YAML syntax error.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise SuiteError(f"{where}: YAML syntax error: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise SuiteError(" ".join(f"{source}: YAML error: {e}".split())) from None
    return validate_suite(data, source)


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file.

    Args:
        path: The YAML file.

    Returns:
        The suite.

    Raises:
        SuiteError: If the file cannot be read, is not valid YAML, or is not a valid suite.
    """
    p = Path(path)
    try:
        text = read_user_text(p)
    except UserFileError as e:
        raise SuiteError(str(e)) from None
    return parse_suite(text, source=p.name)


# --- expansion -------------------------------------------------------------------


class Trial(_Model):
    """One concrete run of one scenario case: everything the runner and the grader need.

    ``initial_state`` is rendered but a ``$generator`` in it is not yet
    evaluated; call :meth:`state` (or :func:`render_state`) for the state.
    """

    trial_id: str = Field(description="suite:scenario:variant:index, stable across runs")
    suite_id: str
    scenario_id: str
    variant_id: str = Field(description="the variable binding, e.g. 'oid=12,status=shipped'")
    binding: dict[str, ScalarField]
    index: int
    seed: int
    task: str
    perturbations: list[str] = Field(
        description="perturbations that changed the task, e.g. ['paraphrase:2', 'typos:3']"
    )
    initial_state: dict[str, Any]
    criteria: Criteria
    budgets: Budgets
    user: UserSpec | None = None
    server: str | None = None
    agent: str | None = None
    tags: list[str] = Field(default_factory=list)

    @property
    def case_id(self) -> str:
        """``scenario[variant]``: the unit pass^k is computed over (the same task, k times)."""
        return f"{self.scenario_id}[{self.variant_id}]"

    def state(self) -> dict[str, Any]:
        """A fresh copy of the initial state, with any ``$generator`` evaluated."""
        return render_state(self.initial_state)


def variant_id(binding: Mapping[str, Scalar]) -> str:
    """The binding's key: ``name=value`` pairs sorted by name, comma-separated; ``default`` if empty."""
    return ",".join(f"{k}={binding[k]}" for k in sorted(binding)) or "default"


def bindings(scenario: Scenario) -> list[dict[str, Scalar]]:
    """Every variable binding of a scenario, in a stable order.

    ``grid``: the cartesian product, first variable varying slowest. ``samples``:
    ``count`` distinct draws from ``random.Random`` seeded by the scenario id and
    ``samples.seed`` (not by the run's base seed, so runs compare case by case).
    No variables: one empty binding.
    """
    v = scenario.variables
    if v is None:
        return [{}]
    if v.grid is not None:
        names = list(v.grid)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*v.grid.values())]
    assert v.samples is not None
    s = v.samples
    rng = random.Random(stable_seed("samples", scenario.id, s.seed))
    out: list[dict[str, Scalar]] = []
    seen: set[str] = set()
    while len(out) < s.count:
        draw: dict[str, Scalar] = {}
        for name in sorted(s.vars):
            spec = s.vars[name]
            draw[name] = rng.choice(spec) if isinstance(spec, list) else rng.randint(spec.min, spec.max)
        key = json.dumps(draw, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(draw)
    return out


def perturb_task(scenario: Scenario, binding: Mapping[str, Scalar], seed: int) -> tuple[str, list[str]]:
    """A scenario's task for one trial, perturbed: `agentlake.sim.perturb.apply_perturbations`
    over its task template and its perturbations.

    Returns:
        ``(task, applied)``, as `apply_perturbations`.
    """
    return apply_perturbations(scenario.task, scenario.perturbations, binding, seed)


def _render_criteria(sc: Scenario, binding: Mapping[str, Scalar]) -> Criteria:
    """Criteria with placeholders filled: texts stay texts, values keep their types."""
    data = sc.criteria.model_dump(by_alias=True, exclude_unset=True)
    for check in data.get("final_state", []):
        check["path"] = render_text(check["path"], binding)
        for op in ("equals", "in", "not_equals"):
            if op in check:
                check[op] = render_value(check[op], binding)
    for call in data.get("tool_calls", {}).get("calls", []):
        call["tool"] = render_text(call["tool"], binding)
        call["args"] = render_value(call.get("args", {}), binding)
    fa = data.get("final_answer", {})
    for key in ("contains", "not_contains"):
        if key in fa:
            fa[key] = [render_text(x, binding) for x in fa[key]]
    if fa.get("equals") is not None:
        fa["equals"] = render_text(fa["equals"], binding)
    if fa.get("regex") is not None:
        fa["regex"] = render_text(fa["regex"], binding, escape=re.escape)
    try:
        return Criteria.model_validate(data)
    except ValidationError as e:
        raise SuiteError(_one_line(e, f"scenario {sc.id} with {variant_id(binding)}: criteria")) from None


def _render_user(sc: Scenario, binding: Mapping[str, Scalar]) -> UserSpec | None:
    if sc.user is None:
        return None
    if sc.user.scripted is not None:
        return UserSpec(scripted=[render_text(turn, binding) for turn in sc.user.scripted])
    assert sc.user.persona is not None
    p = sc.user.persona
    return UserSpec(
        persona=p.model_copy(
            update={
                "instructions": render_text(p.instructions, binding),
                "hidden_info": render_value(p.hidden_info, binding),
                "model": render_text(p.model, binding) if p.model else None,
            }
        )
    )


def expand(suite: Suite, trials: int | None = None, base_seed: int = 0) -> list[Trial]:
    """Every (scenario x variable binding x trial index) of a suite, as concrete trials.

    The seed of a trial is :func:`stable_seed` of (suite id, scenario id,
    binding, index, base_seed); the task's perturbations derive from it, so the
    same suite, ``trials`` and ``base_seed`` always give identical trials. The
    ``trial_id`` names the slot (suite, scenario, variant, index) and does not
    include the base seed. Budgets are the suite defaults overridden field by
    field by the scenario's; the server falls back to the suite default.

    Args:
        suite: The suite.
        trials: Trials per scenario case (default: ``suite.trials``).
        base_seed: Varies every trial's seed (and so perturbations) at once.

    Returns:
        The trials, scenario by scenario, binding by binding, index by index.

    Raises:
        ValueError: If ``trials`` is below 1.
    """
    n = suite.trials if trials is None else trials
    if n < 1:
        raise ValueError(f"trials must be at least 1 (got {n})")
    out: list[Trial] = []
    for sc in suite.scenarios:
        budgets = suite.defaults.budgets.model_copy(update=sc.budgets.model_dump(exclude_none=True))
        for binding in bindings(sc):
            vid = variant_id(binding)
            state = render_value(sc.initial_state, binding)
            criteria = _render_criteria(sc, binding)
            user = _render_user(sc, binding)
            for index in range(n):
                seed = stable_seed(suite.id, sc.id, binding, index, base_seed)
                task, applied = perturb_task(sc, binding, seed)
                out.append(
                    Trial(
                        trial_id=f"{suite.id}:{sc.id}:{vid}:{index}",
                        suite_id=suite.id,
                        scenario_id=sc.id,
                        variant_id=vid,
                        binding=dict(binding),
                        index=index,
                        seed=seed,
                        task=task,
                        perturbations=applied,
                        initial_state=copy.deepcopy(state),
                        criteria=criteria,
                        budgets=budgets,
                        user=user,
                        server=sc.server or suite.defaults.server,
                        agent=suite.agent,
                        tags=list(sc.tags),
                    )
                )
    return out


def render_state(spec: Mapping[str, Any], binding: Mapping[str, Scalar] | None = None) -> dict[str, Any]:
    """Materialise an initial state: render placeholders, then evaluate a ``$generator``.

    A plain mapping is the state itself. A mapping of the form
    ``{"$generator": "package.module:function", "args": {...}}`` is evaluated
    by importing ``function`` and calling ``function(**args)`` (after ``args``
    were rendered), e.g. ``agentlake.sim.reference:shop_state`` with
    ``{seed: 3, ensure: {"{oid}": delivered}}`` to pin the order the task
    needs. Evaluation is lazy: :func:`expand` only renders the spec, the runner
    calls this (via :meth:`Trial.state`) when it sets up a staging server.

    Args:
        spec: The (possibly templated) state or generator spec.
        binding: Variable values (none needed if ``spec`` is already rendered).

    Returns:
        A fresh state the caller may mutate.

    Raises:
        SuiteError: If the generator cannot be imported, fails, or does not return a mapping.
    """
    rendered = render_value(spec, binding or {})
    if "$generator" not in rendered:
        return dict(rendered)
    ref = rendered["$generator"]
    if not isinstance(ref, str) or ":" not in ref:
        raise SuiteError(f"initial_state.$generator: expected 'package.module:function', got {ref!r}")
    module_name, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise SuiteError(f"initial_state.$generator: cannot import {ref!r}: {e}") from None
    try:
        state = fn(**rendered.get("args", {}))
    except Exception as e:
        raise SuiteError(f"initial_state.$generator: {ref} failed: {type(e).__name__}: {e}") from None
    if not isinstance(state, Mapping):
        raise SuiteError(f"initial_state.$generator: {ref} returned {type(state).__name__}, not a mapping")
    return copy.deepcopy(dict(state))
