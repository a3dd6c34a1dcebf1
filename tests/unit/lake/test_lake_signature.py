"""Task signatures: what must agree for a hit, and what must not."""

from __future__ import annotations

import pytest

from agentlake.lake.signature import signatures_agree, task_signature


def agree(a: str, b: str) -> bool:
    return signatures_agree(task_signature(a), task_signature(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Refund order 48213, the item arrived broken.", "Please refund my order #48213, it came damaged."),
        ("Transfer $50 from checking to savings.", "Move 50 dollars from my checking account to savings."),
        ("Approve expense report ER-2291.", "Please approve the expense report ER-2291."),
        ("Book a meeting on 2024-03-05 at 10:00.", "Book a meeting on March 5, 2024 at 10:00."),
        ("Reset the password for alice@corp.io.", "alice@corp.io forgot her password, reset it."),
        ("Deploy build 342 to production.", "Roll out build 342 on prod."),
    ],
)
def test_paraphrases_agree(a: str, b: str) -> None:
    assert agree(a, b)


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ("Refund order 48213.", "Refund order 48231.", "other id"),
        ("Transfer $50 from checking to savings.", "Transfer $500 from checking to savings.", "other amount"),
        (
            "Transfer $50 from checking to savings.",
            "Transfer $50 from savings to checking.",
            "swapped direction",
        ),
        ("Approve expense report ER-2291.", "Reject expense report ER-2291.", "opposite intent"),
        ("Refund order 48213.", "Do not refund order 48213.", "negation"),
        (
            "Enable the dark-mode flag for tenant acme.",
            "Disable the dark-mode flag for tenant acme.",
            "opposite",
        ),
        ("Deploy build 342 to production.", "Deploy build 342 to staging.", "other environment"),
        ("Reset the password for alice@corp.io.", "Reset the password for alice@corp.com.", "other e-mail"),
        ("Book a meeting on 2024-03-05.", "Book a meeting on 2024-03-06.", "other date"),
        ("Merge pull request 1184 into main.", "Merge pull request 1184 into release.", "other target"),
        ("Summarize the Q3 sales report.", "Summarize the Q3 marketing report.", "other object"),
    ],
)
def test_hard_negatives_disagree(a: str, b: str, why: str) -> None:
    assert not agree(a, b), why


def test_signature_parts() -> None:
    sig = task_signature("Wire €1,200 from the operating account to payroll on 5 March 2024.")
    assert sig.action == "transfer" and sig.polarity == 1
    params = dict(sig.params)
    assert params["amount"] == "1200 EUR"
    assert params["from"] == "operating"
    assert params["to"] == "payroll"
    assert params["date"] == "2024-03-05"  # "on ..." ends the "to" side: the date is its own parameter


def test_never_raises_on_odd_input() -> None:
    for text in ("", "   ", "🙂" * 50, "from to from to", "#", "x" * 10_000, "12/45/2024 99:99"):
        sig = task_signature(text)
        assert sig.polarity in (1, -1)


@pytest.mark.parametrize(
    ("asked", "cached", "expected"),
    [
        ("Refund order 25, it arrived broken.", "Refund order 24, it arrived broken.", "25 ≠ 24"),
        ("Cancel order 24.", "Refund order 24.", "action cancel ≠ refund"),
        ("Refund order 24.", "Refund order 24 please.", ""),
    ],
)
def test_signature_difference_names_what_differs(asked: str, cached: str, expected: str) -> None:
    from agentlake.lake.signature import signature_difference

    diff = signature_difference(task_signature(asked), task_signature(cached))
    assert (expected in diff) if expected else diff == ""
