"""Suite files: loading, one-line errors, expansion, seeds and perturbations."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentlake.sim.suite import (
    Scenario,
    Suite,
    SuiteError,
    Trial,
    bindings,
    expand,
    load_suite,
    parse_suite,
    perturb_task,
    render_state,
    render_text,
    render_value,
    stable_seed,
    validate_suite,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "suite.yaml"


def _example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def _suite(*scenarios: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"id": "t", "scenarios": list(scenarios), **top}


def _scenario(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "s",
        "task": "Please refund order {oid}.",
        "variables": {"grid": {"oid": [12]}},
        "criteria": {"outcome": "success"},
    }
    base.update(fields)
    return base


# --- loading ---------------------------------------------------------------------


def test_example_suite_loads() -> None:
    suite = load_suite(EXAMPLE)
    assert suite.id == "shop-support"
    assert suite.agent == "support-bot@1.0"
    assert 4 <= len(suite.scenarios) <= 6
    assert suite.gate is not None
    assert [n for n, _ in suite.gate.resolved()] == [
        "pass_hat_1",
        "pass_hat_3",
        "reward.task_success",
        "tool_calls",
    ]
    multi = next(s for s in suite.scenarios if s.id == "refund-multi-turn")
    assert multi.user is not None and multi.user.scripted


def test_example_suite_expands_and_states_are_feasible() -> None:
    suite = load_suite(EXAMPLE)
    trials = expand(suite)
    # (3 + 3 + 2*2 + 2 + 2) cases x 5 trials
    assert len(trials) == 70
    assert len({t.trial_id for t in trials}) == 70
    for t in trials:
        if t.index:
            continue
        state = t.state()
        path = t.criteria.final_state[0].path  # orders.<oid>.status
        oid = str(t.binding["oid"])
        assert path == f"orders.{oid}.status"
        want = {
            "refund-delivered": "delivered",
            "refund-multi-turn": "delivered",
            "cancel-processing": "processing",
            "refund-shipped-refused": "shipped",
        }.get(t.scenario_id, t.binding.get("status"))
        assert state["orders"][oid]["status"] == want
        assert t.server == "shop"
        assert t.budgets.timeout_s == 60


def _bad(mutate: Any) -> str:
    data = _example()
    mutate(data)
    with pytest.raises(SuiteError) as err:
        validate_suite(data, "suite.yaml")
    message = str(err.value)
    assert "\n" not in message
    return message


def test_error_names_the_field_path_for_a_bad_literal() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["scenarios"][2]["criteria"]["tool_calls"]["mode"] = "loose"

    assert _bad(mutate) == (
        "suite.yaml: scenarios[2].criteria.tool_calls.mode: "
        "Input should be 'strict', 'unordered', 'subset' or 'superset'"
    )


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("scenarios", 0, "task"), "Refund {order}", "scenarios[0].task: unknown variable {order}"),
        (("scenarios", 0, "unknown_field"), 1, "scenarios[0].unknown_field: Extra inputs are not permitted"),
        (("scenarios", 0, "perturbations", 1, "rate"), 2, "scenarios[0].perturbations[1].typos.rate:"),
        (
            ("scenarios", 0, "perturbations", 0, "kind"),
            "shout",
            "scenarios[0].perturbations[0]: Input tag 'shout'",
        ),
        (("scenarios", 1, "variables", "samples", "count"), 99, "exceeds the 60 distinct combinations"),
        (
            ("scenarios", 1, "variables", "samples", "vars", "oid", "min"),
            70,
            "min (70) must not exceed max (60)",
        ),
        (("scenarios", 0, "variables", "grid", "oid", 0), {"a": 1}, "grid.oid[0]: expected a string, number"),
        (
            ("scenarios", 0, "criteria", "final_state", 0, "exists"),
            True,
            "final_state[0]: set exactly one of",
        ),
        (("scenarios", 0, "criteria", "final_answer", "regex"), "((", "final_answer.regex: invalid regular"),
        (
            ("scenarios", 0, "criteria", "final_state", 0, "path"),
            "orders.{x}",
            "unknown variable {x} at final_state",
        ),
        (
            ("scenarios", 0, "budgets"),
            {"max_steps": 0},
            "scenarios[0].budgets.max_steps: Input should be greater",
        ),
        (
            ("scenarios", 4, "user", "persona"),
            {"instructions": "hi"},
            "scenarios[4].user: set exactly one of",
        ),
        (("scenarios", 1, "id"), "refund-delivered", "scenarios: duplicate scenario id 'refund-delivered'"),
        (("gate", "pass_hat_1", "minimum"), 0.5, "gate.pass_hat_1.minimum: Extra inputs"),
        (("gate", "accuracy"), {"min": 0.5}, "gate: unknown gate metric 'accuracy'"),
        (("agent",), "support-bot", "agent: expected name@version"),
        (("trials",), 0, "trials: Input should be greater than 0"),
    ],
)
def test_one_line_errors_name_the_field(path: tuple[Any, ...], value: Any, expected: str) -> None:
    def mutate(d: dict[str, Any]) -> None:
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    message = _bad(mutate)
    assert message.startswith("suite.yaml: ")
    assert expected in message


def test_missing_criteria_and_task_variable() -> None:
    with pytest.raises(SuiteError, match=r"scenarios\[0\]\.criteria: declare at least one"):
        validate_suite(_suite(_scenario(criteria={})), "x.yaml")
    with pytest.raises(
        SuiteError, match=r"scenarios\[0\]\.task: unknown variable \{oid\} .*declared variables: none"
    ):
        validate_suite(_suite(_scenario(variables=None)), "x.yaml")


def test_yaml_syntax_error_gives_the_line() -> None:
    text = "id: t\nscenarios:\n  - id: a\n    task: [unclosed\n    criteria: {outcome: success}\n"
    with pytest.raises(SuiteError, match=r"^broken\.yaml:\d+:\d+: YAML syntax error"):
        parse_suite(text, "broken.yaml")
    with pytest.raises(SuiteError, match="must be a mapping"):
        parse_suite("- 1\n", "list.yaml")


def test_unreadable_file() -> None:
    with pytest.raises(SuiteError, match="cannot read"):
        load_suite("/nonexistent/suite.yaml")


# --- variables and expansion ----------------------------------------------------


def test_grid_is_the_cartesian_product() -> None:
    sc = Scenario.model_validate(
        _scenario(task="{a} {b}", variables={"grid": {"a": [1, 2, 3], "b": ["x", "y"]}})
    )
    got = bindings(sc)
    assert len(got) == 6
    assert got[0] == {"a": 1, "b": "x"} and got[1] == {"a": 1, "b": "y"}


def test_samples_are_distinct_seeded_and_stable() -> None:
    raw = _scenario(
        task="{oid} {who}",
        variables={
            "samples": {"count": 8, "seed": 3, "vars": {"oid": {"min": 1, "max": 5}, "who": ["ada", "ken"]}}
        },
    )
    sc = Scenario.model_validate(raw)
    first = bindings(sc)
    assert len(first) == 8
    assert len({(b["oid"], b["who"]) for b in first}) == 8
    assert all(1 <= int(b["oid"]) <= 5 and b["who"] in ("ada", "ken") for b in first)
    assert bindings(Scenario.model_validate(copy.deepcopy(raw))) == first
    raw["variables"]["samples"]["seed"] = 4
    assert bindings(Scenario.model_validate(raw)) != first


def test_expansion_counts() -> None:
    suite = validate_suite(
        _suite(
            _scenario(id="grid", variables={"grid": {"oid": [1, 2, 3]}}),
            _scenario(
                id="samples", variables={"samples": {"count": 4, "vars": {"oid": {"min": 1, "max": 50}}}}
            ),
            _scenario(id="plain", task="Hello", variables=None),
            trials=3,
        )
    )
    trials = expand(suite)
    assert len(trials) == (3 + 4 + 1) * 3
    assert len(expand(suite, trials=1)) == 8
    plain = [t for t in trials if t.scenario_id == "plain"]
    assert {t.variant_id for t in plain} == {"default"}
    assert [t.index for t in plain] == [0, 1, 2]
    assert trials[0].trial_id == "t:grid:oid=1:0"
    assert trials[0].case_id == "grid[oid=1]"
    with pytest.raises(ValueError):
        expand(suite, trials=0)


def test_expand_is_deterministic_and_seeded_by_base_seed() -> None:
    suite = load_suite(EXAMPLE)
    a = expand(suite)
    b = expand(load_suite(EXAMPLE))
    assert [t.model_dump() for t in a] == [t.model_dump() for t in b]
    assert len({t.seed for t in a}) == len(a)
    c = expand(suite, base_seed=1)
    assert [t.trial_id for t in c] == [t.trial_id for t in a]
    assert all(x.seed != y.seed for x, y in zip(a, c, strict=True))
    assert [t.task for t in a] != [t.task for t in c]


def test_stable_seed_is_not_pythons_hash() -> None:
    # pinned values: identical in every process (hash() is salted per process) and across machines
    assert stable_seed("x") == 7400246612920684362
    assert stable_seed("suite", "scenario", {"oid": 12}, 0, 0) == 4483935685356618190
    assert stable_seed("a", 1) != stable_seed("a", 2)
    assert 0 <= stable_seed("y") < 2**63


def test_budgets_merge_defaults_field_by_field() -> None:
    suite = validate_suite(
        _suite(
            _scenario(budgets={"max_tool_calls": 2}),
            defaults={"budgets": {"max_steps": 10, "max_tool_calls": 5}, "server": "shop"},
        )
    )
    (t,) = expand(suite, trials=1)
    assert (t.budgets.max_steps, t.budgets.max_tool_calls, t.budgets.timeout_s) == (10, 2, None)
    assert t.server == "shop"


# --- templating ------------------------------------------------------------------


def test_templated_integer_state_stays_int() -> None:
    suite = validate_suite(
        _suite(
            _scenario(
                initial_state={
                    "orders": {"{oid}": {"order_id": "{oid}", "note": "order {oid}", "tags": ["{oid}"]}}
                },
                criteria={
                    "final_state": [{"path": "orders.{oid}.order_id", "equals": "{oid}"}],
                    "tool_calls": {"calls": [{"tool": "get_order", "args": {"order_id": "{oid}"}}]},
                    "final_answer": {"contains": ["{oid}"]},
                },
            )
        )
    )
    (t,) = expand(suite, trials=1)
    order = t.initial_state["orders"]["12"]
    assert order["order_id"] == 12 and isinstance(order["order_id"], int)
    assert order["note"] == "order 12" and order["tags"] == [12]
    assert t.criteria.final_state[0].path == "orders.12.order_id"
    assert t.criteria.final_state[0].equals == 12
    assert t.criteria.tool_calls is not None and t.criteria.tool_calls.calls[0].args == {"order_id": 12}
    assert t.criteria.final_answer is not None and t.criteria.final_answer.contains == ["12"]


def test_trial_state_is_a_fresh_copy() -> None:
    suite = validate_suite(_suite(_scenario(initial_state={"orders": {"{oid}": {"status": "delivered"}}})))
    (t,) = expand(suite, trials=1)
    s1 = t.state()
    s1["orders"]["12"]["status"] = "refunded"
    assert t.state()["orders"]["12"]["status"] == "delivered"


def test_render_state_evaluates_a_generator_lazily() -> None:
    spec = {
        "$generator": "agentlake.sim.reference:shop_state",
        "args": {"seed": 1, "n_orders": 5, "ensure": {"{oid}": "{st}"}},
    }
    state = render_state(spec, {"oid": 3, "st": "processing"})
    assert len(state["orders"]) == 5
    assert state["orders"]["3"]["status"] == "processing"
    assert render_state(spec, {"oid": 3, "st": "processing"}) == state
    with pytest.raises(SuiteError, match="cannot import"):
        render_state({"$generator": "agentlake.nope:fn"})
    with pytest.raises(SuiteError, match="failed"):
        render_state({"$generator": "agentlake.sim.reference:shop_state", "args": {"bogus": 1}})


def test_generator_spec_is_checked_at_load() -> None:
    bad = _scenario(initial_state={"$generator": "agentlake.sim.reference:shop_state", "extra": 1})
    with pytest.raises(SuiteError, match=r"scenarios\[0\]\.initial_state: a \$generator state takes only"):
        validate_suite(_suite(bad), "x.yaml")


def test_render_text_braces_and_regex_escaping() -> None:
    assert render_text("{{literal}} {a} \\d{3}", {"a": 1}) == "{literal} 1 \\d{3}"
    assert render_value({"k{a}": ["{a}", "x{a}"]}, {"a": 7}) == {"k7": [7, "x7"]}
    with pytest.raises(SuiteError, match="unknown variable"):
        render_text("{b}", {"a": 1})
    suite = validate_suite(
        _suite(
            _scenario(
                variables={"grid": {"oid": ["1.5"]}}, criteria={"final_answer": {"regex": "^order {oid}$"}}
            )
        )
    )
    (t,) = expand(suite, trials=1)
    assert t.criteria.final_answer is not None
    assert t.criteria.final_answer.regex == "^order " + re.escape("1.5") + "$"


# --- perturbations ---------------------------------------------------------------

LONG = "Please refund order {oid} quickly because the package arrived completely broken and scratched"


def test_typos_keep_digits_and_variable_values() -> None:
    sc = Scenario.model_validate(
        _scenario(
            task=LONG + " for {who} around 10am, reference ABC123.",
            variables={"grid": {"oid": [40417], "who": ["margaret"]}},
            perturbations=[{"kind": "typos", "rate": 1.0}],
        )
    )
    changed = 0
    for seed in range(50):
        text, applied = perturb_task(sc, {"oid": 40417, "who": "margaret"}, seed)
        assert re.findall(r"\d+", text) == ["40417", "10", "123"]
        assert "margaret" in text and "10am" in text and "ABC123" in text
        changed += text != render_text(sc.task, {"oid": 40417, "who": "margaret"})
        assert applied and applied[0].startswith("typos:")
    assert changed == 50


def test_typos_respect_protect_and_rate() -> None:
    sc = Scenario.model_validate(
        _scenario(task=LONG, perturbations=[{"kind": "typos", "rate": 1.0, "protect": ["refund", "order"]}])
    )
    text, _ = perturb_task(sc, {"oid": 12}, 5)
    words = text.split()
    assert words[1:4] == ["refund", "order", "12"]
    low = Scenario.model_validate(_scenario(task=LONG, perturbations=[{"kind": "typos", "rate": 0.01}]))
    untouched = sum(
        perturb_task(low, {"oid": 12}, s)[0] == render_text(LONG, {"oid": 12}) for s in range(100)
    )
    assert untouched > 80


def test_perturbations_are_deterministic_by_seed() -> None:
    sc = Scenario.model_validate(
        _scenario(
            task="Please refund order {oid}. The item arrived broken; I want it fixed.",
            perturbations=[
                {
                    "kind": "paraphrase",
                    "variants": ["Refund {oid} please.", "Money back for order {oid}. Now."],
                },
                {"kind": "typos", "rate": 0.3},
                {
                    "kind": "distractor",
                    "sentences": ["Nice weather today.", "I like cats."],
                    "position": "random",
                },
                {"kind": "reorder"},
            ],
        )
    )
    runs = [[perturb_task(sc, {"oid": 12}, seed) for seed in range(40)] for _ in range(2)]
    assert runs[0] == runs[1]
    texts = {t for t, _ in runs[0]}
    assert len(texts) > 10
    assert all("12" in t for t in texts)
    kinds = {a.split(":")[0] for _, applied in runs[0] for a in applied}
    assert kinds == {"paraphrase", "typos", "distractor", "reorder"}


def test_paraphrase_distractor_reorder_semantics() -> None:
    para = Scenario.model_validate(
        _scenario(
            perturbations=[
                {"kind": "paraphrase", "variants": ["Refund {oid} now."], "include_original": False}
            ]
        )
    )
    assert perturb_task(para, {"oid": 9}, 1) == ("Refund 9 now.", ["paraphrase:1"])
    dis = Scenario.model_validate(
        _scenario(
            perturbations=[{"kind": "distractor", "sentences": ["I like cats."], "position": "prepend"}]
        )
    )
    assert perturb_task(dis, {"oid": 9}, 1) == ("I like cats. Please refund order 9.", ["distractor:prepend"])
    reo = Scenario.model_validate(
        _scenario(task="One {oid}. Two; three", perturbations=[{"kind": "reorder"}])
    )
    outcomes = {perturb_task(reo, {"oid": 1}, s)[0] for s in range(30)}
    assert "One 1. Two; three" in outcomes or len(outcomes) > 1
    for text in outcomes:
        assert sorted(re.split(r"[.;]\s*", text.rstrip("."))) == sorted(["One 1", "Two", "three"])
    never = Scenario.model_validate(_scenario(perturbations=[{"kind": "reorder", "probability": 0.0}]))
    assert perturb_task(never, {"oid": 9}, 1) == ("Please refund order 9.", [])


def test_only_one_paraphrase() -> None:
    p = {"kind": "paraphrase", "variants": ["x {oid}"]}
    with pytest.raises(SuiteError, match="at most one paraphrase"):
        validate_suite(_suite(_scenario(perturbations=[p, p])))
    with pytest.raises(SuiteError, match=r"perturbations: unknown variable \{zz\} at \[0\]\.variants\[0\]"):
        validate_suite(_suite(_scenario(perturbations=[{"kind": "paraphrase", "variants": ["x {zz}"]}])))


def test_user_turns_are_rendered() -> None:
    suite = validate_suite(
        _suite(
            _scenario(user={"scripted": ["It is order {oid}."]}),
            _scenario(
                id="p",
                user={"persona": {"instructions": "You own order {oid}.", "hidden_info": {"oid": "{oid}"}}},
            ),
        )
    )
    a, b = expand(suite, trials=1)
    assert a.user is not None and a.user.scripted == ["It is order 12."]
    assert b.user is not None and b.user.persona is not None
    assert b.user.persona.instructions == "You own order 12." and b.user.persona.hidden_info == {"oid": 12}


def test_trials_and_suites_round_trip_through_json() -> None:
    suite = load_suite(EXAMPLE)
    assert Suite.model_validate_json(suite.model_dump_json()) == suite
    for trial in expand(suite, trials=2):
        assert Trial.model_validate_json(trial.model_dump_json()) == trial


def test_a_misspelled_required_key_is_named_before_the_field_it_leaves_missing() -> None:
    data = _suite(_scenario())
    data["scenarioz"] = data.pop("scenarios")
    with pytest.raises(SuiteError) as err:
        validate_suite(data, "x.yaml")
    assert str(err.value) == "x.yaml: scenarioz: unknown field: did you mean 'scenarios'?"
    nested = _suite(_scenario())
    nested["scenarios"][0]["tsk"] = nested["scenarios"][0].pop("task")
    with pytest.raises(
        SuiteError, match=r"^x\.yaml: scenarios\[0\]\.tsk: unknown field: did you mean 'task'\?$"
    ):
        validate_suite(nested, "x.yaml")
    unrelated = _suite(_scenario())
    unrelated["colour"] = "blue"  # no near miss: pydantic's own words
    with pytest.raises(SuiteError, match=r"^x\.yaml: colour: Extra inputs are not permitted$"):
        validate_suite(unrelated, "x.yaml")


# --- values out of range: caught when the suite loads, before any trial -------------------

SHOP = "agentlake.sim.reference:shop_state"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            {"seed": 11, "n_orders": 1_000_000_000, "ensure": {"{oid}": "delivered"}},
            "n.yaml: scenarios[0].initial_state.args.n_orders: Input should be less than or equal to 100000 "
            "(with oid=12)",
        ),
        (
            {"seed": 11, "n_orders": -5, "ensure": {"{oid}": "delivered"}},
            "n.yaml: scenarios[0].initial_state.args.n_orders: Input should be greater than or equal to 0 "
            "(with oid=12)",
        ),
        (  # the KeyError '3' of the run, now at load
            {"n_orders": 5, "ensure": {"{oid}": "delivered"}},
            "n.yaml: scenarios[0].initial_state.args: ensure: order 12 is not among orders 1..5 (n_orders) "
            "(with oid=12)",
        ),
        (
            {"n_orders": "many"},
            "n.yaml: scenarios[0].initial_state.args.n_orders: Input should be a valid integer",
        ),
        ({"bogus": 1}, "n.yaml: scenarios[0].initial_state.args.bogus: Extra inputs are not permitted"),
    ],
)
def test_state_generator_args_are_checked_at_load(args: dict[str, Any], expected: str) -> None:
    bad = _scenario(initial_state={"$generator": SHOP, "args": args})
    with pytest.raises(SuiteError) as e:
        validate_suite(_suite(bad), "n.yaml")
    assert str(e.value).startswith(expected)
    assert "\n" not in str(e.value)


def test_generators_without_an_args_model_are_checked_against_their_signature() -> None:
    bad = _scenario(initial_state={"$generator": "agentlake.sim.reference:shop_handler", "args": {"nope": 1}})
    with pytest.raises(
        SuiteError, match=r"^x\.yaml: scenarios\[0\]\.initial_state\.args: .* does not take these args"
    ):
        validate_suite(_suite(bad), "x.yaml")
    gone = _scenario(initial_state={"$generator": "agentlake.nope:fn"})
    with pytest.raises(
        SuiteError, match=r"^x\.yaml: scenarios\[0\]\.initial_state\.\$generator: cannot import"
    ):
        validate_suite(_suite(gone), "x.yaml")
    ok = _scenario(
        initial_state={"$generator": SHOP, "args": {"n_orders": 100_000, "ensure": {"{oid}": "shipped"}}}
    )
    assert validate_suite(_suite(ok)).scenarios[0].initial_state["args"]["n_orders"] == 100_000


@pytest.mark.parametrize(
    ("gate", "expected"),
    [
        (
            {"pass_hat_1": {"min": 8}},
            "gate: pass_hat_1.min: must be in [0, 1], pass_hat_1 is a share (got 8)",
        ),
        (
            {"pass_at_k": {"k": 2, "max": 1.5}},
            "gate: pass_at_k.max: must be in [0, 1], pass_at_k is a share (got 1.5)",
        ),
        ({"reward.task_success": {"max_drop": 2}}, "gate: reward.task_success.max_drop: must be in [0, 1]"),
        ({"reward": {"min": -0.1}}, "gate: reward.min: must be in [0, 1], reward is a share (got -0.1)"),
        (
            {"tool_calls": {"min": -1}},
            "gate: tool_calls.min: must be in [0, inf], tool_calls is a count (got -1)",
        ),
        (
            {"pass_hat_1": {"min": 0.9, "max": 0.5}},
            "gate.pass_hat_1: min 0.9 is above max 0.5: no value can pass",
        ),
        ({"reward": {"min": float("nan")}}, "gate.reward.min: Input should be a finite number"),
    ],
)
def test_gate_bounds_outside_a_metrics_range_are_refused_at_load(gate: dict[str, Any], expected: str) -> None:
    with pytest.raises(SuiteError) as e:
        validate_suite(_suite(_scenario(), gate=gate), "g.yaml")
    assert str(e.value).startswith(f"g.yaml: {expected}")


def test_a_suite_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s_binary.yaml"
    path.write_bytes(b"\xd2W D\x98\x8a")
    with pytest.raises(
        SuiteError, match=r"s_binary\.yaml: not UTF-8 text: invalid continuation byte at byte 0$"
    ):
        load_suite(path)
