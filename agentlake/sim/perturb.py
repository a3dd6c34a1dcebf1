"""Task perturbations of a simulation scenario: paraphrase, typos, distractor, reorder.

Pure: each perturbation draws from its own ``random.Random`` seeded from the
trial's seed, its position and its kind (`agentlake.sim.templating.stable_seed`),
so a suite and a base seed always give the same texts.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentlake.sim.templating import Scalar, render_text, stable_seed


class _Perturbation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    probability: float = Field(default=1.0, ge=0, le=1, description="chance it is applied to a trial")


class Paraphrase(_Perturbation):
    """Replace the task template by one of ``variants`` (or keep it, with ``include_original``)."""

    kind: Literal["paraphrase"]
    variants: list[str] = Field(min_length=1)
    include_original: bool = True


class Typos(_Perturbation):
    """Swap two adjacent letters or drop a letter in a share ``rate`` of the words.

    Words containing a digit or a variable's value, words in ``protect`` and
    words shorter than 3 letters are never touched, so order numbers and the
    values criteria rely on stay intact.
    """

    kind: Literal["typos"]
    rate: float = Field(default=0.1, gt=0, le=1)
    protect: list[str] = Field(default_factory=list)


class Distractor(_Perturbation):
    """Add one irrelevant sentence, chosen from ``sentences``, before or after the task."""

    kind: Literal["distractor"]
    sentences: list[str] = Field(min_length=1)
    position: Literal["prepend", "append", "random"] = "append"


class Reorder(_Perturbation):
    """Shuffle the task's sentences / clauses (split after '.', ';', '!' or '?')."""

    kind: Literal["reorder"]


Perturbation = Annotated[Paraphrase | Typos | Distractor | Reorder, Field(discriminator="kind")]


def apply_perturbations(
    task: str, perturbations: Sequence[Perturbation], binding: Mapping[str, Scalar], seed: int
) -> tuple[str, list[str]]:
    """Render a task template for one trial and apply its perturbations.

    Each perturbation gets its own ``random.Random`` seeded from (trial seed,
    position, kind), so adding one does not change the others' choices. The
    paraphrase (at most one) picks the template first; the others then apply to
    the rendered text in the order declared. A perturbation whose
    ``probability`` draw fails is skipped.

    Args:
        task: The task template.
        perturbations: The perturbations, in declared order.
        binding: Variable values.
        seed: The trial's seed.

    Returns:
        ``(task, applied)``: ``applied`` names each perturbation that changed the text —
        ``paraphrase:<variant number, from 1>``, ``typos:<words changed>``,
        ``distractor:prepend|append``, ``reorder``.
    """
    rngs = [random.Random(stable_seed(seed, i, p.kind)) for i, p in enumerate(perturbations)]
    active = [(p, r) for p, r in zip(perturbations, rngs, strict=True) if r.random() < p.probability]
    template = task
    applied: list[str] = []
    for p, rng in active:
        if isinstance(p, Paraphrase):
            options = ([task] if p.include_original else []) + p.variants
            choice = rng.randrange(len(options)) - int(p.include_original)
            if choice >= 0:
                template = p.variants[choice]
                applied.append(f"paraphrase:{choice + 1}")
    text = render_text(template, binding)
    protected = {str(v) for v in binding.values() if str(v)}
    for p, rng in active:
        if isinstance(p, Typos):
            text, n = _typos(text, rng, p.rate, protected, {w.lower() for w in p.protect})
            if n:
                applied.append(f"typos:{n}")
        elif isinstance(p, Distractor):
            sentence = render_text(rng.choice(p.sentences), binding)
            front = p.position == "prepend" or (p.position == "random" and rng.random() < 0.5)
            text = f"{sentence} {text}" if front else f"{text} {sentence}"
            applied.append(f"distractor:{'prepend' if front else 'append'}")
        elif isinstance(p, Reorder):
            reordered = _reorder(text, rng)
            if reordered != text:
                applied.append("reorder")
            text = reordered
    return text, applied


def _typos(
    text: str, rng: random.Random, rate: float, protected: set[str], keep: set[str]
) -> tuple[str, int]:
    count = 0

    def mangle(m: re.Match[str]) -> str:
        nonlocal count
        word = m.group(0)
        hit = rng.random() < rate  # drawn for every word, so the stream does not depend on eligibility
        letters = [i for i, ch in enumerate(word) if ch.isalpha()]
        eligible = (
            len(letters) >= 3
            and not any(ch.isdigit() for ch in word)
            and not any(p in word for p in protected)
            and word.strip(".,;:!?\"'()").lower() not in keep
        )
        if not (hit and eligible):
            return word
        swaps = [i for i in letters if i + 1 < len(word) and word[i + 1].isalpha() and word[i] != word[i + 1]]
        if swaps and rng.random() < 0.5:
            i = rng.choice(swaps)
            new = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        else:
            i = rng.choice(letters[1:])
            new = word[:i] + word[i + 1 :]
        count += 1
        return new

    return re.sub(r"\S+", mangle, text), count


def _reorder(text: str, rng: random.Random) -> str:
    parts = [p for p in re.split(r"(?<=[.;!?])\s+", text.strip()) if p]
    if len(parts) < 2:
        return text
    rng.shuffle(parts)
    fixed = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part[-1] not in ".;!?":
            part += "."
        elif last and part[-1] == ";":
            part = part[:-1] + "."
        fixed.append(part)
    return " ".join(fixed)
