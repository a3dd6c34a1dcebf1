"""Task signatures: the intent (action + polarity) and the parameters of a task text.

Embeddings cannot tell "refund order 48213" from "refund order 48231", "approve"
from "reject" the same report, or "from A to B" from "from B to A" (a bag of
words embeds both identically). A cache hit therefore needs *signature
agreement* on top of vector similarity: the same action with the same polarity
and the same parameter set. The signature is extracted once, at ingest, by
:func:`task_signature` (pure, ~20 µs for a short task) and compared with
:func:`signatures_agree`.

Parameters recognised (each normalised so paraphrases agree):

- e-mails, host names, IPv4 addresses, versions (``2.4.1``);
- dates (``2024-03-05``, ``March 5, 2024``, ``5 March 2024``, ``Sept 14 2024``,
  today/tomorrow/yesterday) -> ``YYYY-MM-DD`` or the relative word; times ``10:00``;
- amounts with a currency (``$1,250``, ``1250 dollars``, ``€50``, ``50 EUR``)
  -> ``1250 USD``; a currency named alone (``into euros``);
- identifiers with a digit (``ER-2291``, ``#48213``, ``Q3``), numbers (also
  spelled two..twelve), hyphenated names (``billing-api``);
- environments (prod/production, staging, dev, test);
- directions: ``from X to Y`` -> ``from=X``, ``to=Y`` (what is inside each side
  is kept, so swapping the sides changes the signature);
- names: capitalised words inside a sentence (``Priya``, ``Boston``) and the
  word next to an anchor noun (``tenant acme``, ``the admins group``).

The vocabulary is English and small by design: a task whose action is not in
it gets ``action=None``, and two such tasks agree only if their parameters do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache


def _word_list(text: str) -> list[str]:
    return text.split()


# -- intent vocabulary: phrase -> (action, polarity) ---------------------------
# Specific verbs decide the action; generic ones ("move", "set") only when no
# specific verb occurs. Opposites share an action with polarity -1.
_SPECIFIC: dict[str, tuple[str, int]] = {}
_GENERIC: dict[str, tuple[str, int]] = {}


def _vocab(table: dict[str, tuple[str, int]], action: str, pos: str, neg: str = "") -> None:
    for phrase in pos.split("|"):
        if phrase:
            table[phrase] = (action, 1)
    for phrase in neg.split("|"):
        if phrase:
            table[phrase] = (action, -1)


for _a, _p, _n in (
    ("refund", "refund|refunds|refunded|reimburse|money back", ""),
    ("cancel", "cancel|cancelled|canceled|no longer want", "reinstate|uncancel"),
    ("status", "status|where is|check on|track", ""),
    ("transfer", "transfer|wire", ""),
    ("approve", "approve|accept|sign off|sign off on|ok|greenlight", "reject|deny|decline|refuse"),
    ("pay", "pay|settle|payment", ""),
    ("void", "void", ""),
    ("charge", "charge", ""),
    ("deploy", "deploy|roll out", "roll back|rollback|revert"),
    ("promote", "promote", "demote"),
    ("enable", "enable|turn on|switch on|activate", "disable|turn off|switch off|deactivate"),
    ("grant", "grant", "revoke"),
    ("reset", "reset", ""),
    ("book", "book|schedule|reserve|set up a meeting", ""),
    ("reschedule", "reschedule|postpone", ""),
    ("restore", "restore", ""),
    ("backup", "back up", ""),
    ("scale", "increase|scale|scale up|raise", "decrease|scale down|reduce|lower"),
    ("upgrade", "upgrade", "downgrade"),
    ("subscribe", "subscribe|sign up", "unsubscribe|opt out"),
    ("lock", "lock|freeze|suspend", "unlock|unfreeze|unsuspend"),
    ("close", "close|resolve|resolved", "reopen"),
    ("escalate", "escalate", ""),
    ("convert", "convert|how much is", ""),
    ("start", "start|kick off|launch|begin", "stop|halt|pause|kill"),
    ("add", "add|include", "remove|take out|exclude"),
    ("block", "block", "unblock|allow"),
    ("archive", "archive", "unarchive"),
    ("mute", "mute|silence|snooze", "unmute"),
    ("merge", "merge", ""),
    ("rotate", "rotate", ""),
    ("renew", "renew", ""),
    ("translate", "translate", ""),
    ("summarize", "summarize|summarise|summary", ""),
    ("list", "list|show", ""),
    ("count", "count", ""),
    ("find", "find|search|look up", ""),
    ("create", "create|set up", "delete|remove account"),
    ("write", "write|draft", ""),
):
    _vocab(_SPECIFIC, _a, _p, _n)
for _a, _p, _n in (
    ("add", "put", ""),
    ("send", "send|email|forward|ship|dispatch|deliver", ""),
    ("move", "move", ""),
    ("set", "set|change|update|switch", ""),
    ("start", "run", ""),
    ("create", "make|generate", ""),
    ("get", "get|fetch", ""),
    ("give", "give", ""),
):
    _vocab(_GENERIC, _a, _p, _n)

# "give/add ... access|permission" is a grant; "remove ... access" a revoke
_ACCESS_NOUNS = {"access", "permission", "permissions", "role"}
_NEGATIONS = {"not", "don't", "dont", "never", "without"}

_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        (
            "january jan",
            "february feb",
            "march mar",
            "april apr",
            "may",
            "june jun",
            "july jul",
            "august aug",
            "september sep sept",
            "october oct",
            "november nov",
            "december dec",
        )
    )
    for m in names.split()
}
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_CURRENCY = {
    "$": "USD",
    "usd": "USD",
    "dollar": "USD",
    "dollars": "USD",
    "bucks": "USD",
    "€": "EUR",
    "eur": "EUR",
    "euro": "EUR",
    "euros": "EUR",
    "£": "GBP",
    "gbp": "GBP",
    "pound": "GBP",
    "pounds": "GBP",
}
_ENVS = {
    "prod": "production",
    "production": "production",
    "staging": "staging",
    "stage": "staging",
    "dev": "development",
    "development": "development",
    "test": "test",
    "testing": "test",
    "qa": "test",
    "sandbox": "sandbox",
}
_NUMBER_WORDS = {
    w: str(i + 2)
    for i, w in enumerate(_word_list("two three four five six seven eight nine ten eleven twelve"))
}
_RELATIVE_DAYS = {"today": "today", "tonight": "today", "tomorrow": "tomorrow", "yesterday": "yesterday"}

# words that never carry a parameter (articles, possessives, fillers, container nouns)
_STOP = set(
    _word_list(
        """a an the my our your their his her its this that these those me us it them i you we he she
    they please kindly now just also and or of for on at by in with until before after because
    account accounts warehouse branch plan group list team backup database db bucket environment
    channel queue feature new old all some any is are was be to into from up down
    there here so then can could would will should want need like let"""
    )
)
# a segment of "from X to Y" ends at these
_SEGMENT_END = {
    "on",
    "at",
    "for",
    "by",
    "in",
    "with",
    "until",
    "before",
    "after",
    "because",
    "and",
    "then",
    "since",
    "via",
    "using",
    "without",
    "but",
}
_ANCHOR_AFTER = {
    "customer",
    "tenant",
    "user",
    "project",
    "host",
    "service",
    "region",
    "team",
    "group",
    "repo",
    "repository",
    "branch",
    "bucket",
    "table",
    "channel",
    "plan",
}
_ANCHOR_BEFORE = {
    "service",
    "group",
    "plan",
    "bucket",
    "database",
    "db",
    "team",
    "report",
    "access",
    "permission",
    "flag",
    "branch",
    "channel",
    "table",
    "list",
    "repo",
    "cluster",
    "queue",
}
# capitalised words that are not names
_NOT_NAMES = {"ok", "okay", "hi", "hello", "please", "thanks", "pr", "api", "db", "etl", "tls", "ip", "url"}


def _norm_number(text: str) -> str:
    v = float(text.replace(",", ""))
    return str(int(v)) if v == int(v) else f"{v:g}"


@dataclass(frozen=True)
class TaskSignature:
    """What a task asks for, as far as a cache hit is concerned.

    Attributes:
        action: canonical action (``"refund"``, ``"approve"``, ...) or None when none is known.
        polarity: +1, or -1 for the opposite of the action (reject = approve, -1) or a negation.
        params: sorted ``(kind, value)`` pairs; ``kind`` is one of email, host, ip, version,
            date, time, amount, currency, id, num, env, from, to, name.
    """

    action: str | None
    polarity: int
    params: tuple[tuple[str, str], ...]

    @property
    def intent(self) -> str:
        if self.action is None:
            return "?"
        return self.action if self.polarity > 0 else f"not-{self.action}"

    def describe(self) -> str:
        """A compact readable form, e.g. ``refund[num=48213]`` (computed once per signature)."""
        return self._described

    @cached_property
    def _described(self) -> str:
        # a lookup describes up to ten candidates' signatures; entries keep theirs for life
        return f"{self.intent}[{', '.join(f'{k}={v}' for k, v in self.params)}]"

    def to_dict(self) -> dict[str, object]:
        return {"action": self.action, "polarity": self.polarity, "params": [list(p) for p in self.params]}


@lru_cache(maxsize=4096)  # a missed lookup explains up to ten candidates; their signatures repeat
def signature_difference(asked: TaskSignature, cached: TaskSignature) -> str:
    """Why two signatures disagree, readably: ``"num 25 ≠ 24"``, ``"action refund ≠ cancel"``,
    ``"polarity not-refund ≠ refund"``, ``"id abc ≠ (none)"``; "" when they agree.
    The left side is the asked task's, the right side the cached entry's."""
    if asked.action != cached.action:
        return f"action {asked.action or '?'} ≠ {cached.action or '?'}"
    if asked.polarity != cached.polarity:
        return f"polarity {asked.intent} ≠ {cached.intent}"
    left: dict[str, list[str]] = {}
    right: dict[str, list[str]] = {}
    for k, v in asked.params:
        left.setdefault(k, []).append(v)
    for k, v in cached.params:
        right.setdefault(k, []).append(v)
    parts = [
        f"{k} {','.join(left.get(k, [])) or '(none)'} ≠ {','.join(right.get(k, [])) or '(none)'}"
        for k in sorted(left.keys() | right.keys())
        if left.get(k) != right.get(k)
    ]
    return "; ".join(parts)


def signatures_agree(a: TaskSignature, b: TaskSignature) -> bool:
    """Whether two tasks ask for the same thing: same action, same polarity, same parameters."""
    return a.action == b.action and a.polarity == b.polarity and a.params == b.params


# -- extraction ----------------------------------------------------------------
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.I)),
    ("ip", re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")),
    ("host", re.compile(r"\b(?:[a-z][\w-]*\.)+(?:com|org|net|io|dev|co|example|local|internal)\b", re.I)),
    ("version", re.compile(r"\bv?\d+\.\d+\.\d+\b")),
    ("date_iso", re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")),
    (
        "date_md",
        re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?\b", re.I),
    ),
    (
        "date_dm",
        re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MONTH_RE})\.?(?:,?\s+(\d{{4}}))?\b", re.I),
    ),
    ("date_us", re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")),
    ("time", re.compile(r"\b(\d{1,2}):(\d{2})\b")),
    ("amount_pre", re.compile(r"([$€£])\s?(\d[\d,]*(?:\.\d+)?)")),
    (
        "amount_post",
        re.compile(r"\b(\d[\d,]*(?:\.\d+)?)\s?(usd|eur|gbp|dollars?|euros?|pounds?|bucks)\b", re.I),
    ),
    ("currency", re.compile(r"\b(usd|eur|gbp|dollars|euros|pounds)\b", re.I)),
    ("id", re.compile(r"#?\b[a-z]+(?:[-_][a-z0-9]+)*[-_]?\d[\w-]*\b|#\d+\b", re.I)),
    ("hyphen", re.compile(r"\b[a-z]+(?:-[a-z]+)+\b", re.I)),
    ("num", re.compile(r"(?:\bx)?\b\d[\d,]*(?:\.\d+)?\b")),
]
# a character each of these patterns cannot match without: the pass is skipped when the text
# has none of them (half the passes for "Refund order 48213, it arrived broken.")
_NEEDS = {
    "email": "@",
    "ip": ".",
    "host": ".",
    "version": ".",
    "date_iso": "-",
    "date_us": "/",
    "time": ":",
    "amount_pre": "$€£",
    "hyphen": "-",
}
_COMMON_HYPHENS = {"time-off", "sign-in", "sign-ins", "log-in", "e-mail", "follow-up", "check-in", "re-run"}
_TOKEN = re.compile(r"\x00[\ue000-\uf8ff]\x00|[A-Za-z][A-Za-z'’-]*|[.,;:!?]")


def _ph(i: int) -> str:
    """A placeholder for parameter `i` that no later pattern matches (no digits, no letters)."""
    return f"\x00{chr(0xE000 + i)}\x00"


def _idx(token: str) -> int:
    return ord(token[1]) - 0xE000


def _date(y: str | None, m: int, d: int) -> str:
    return f"{int(y):04d}-{m:02d}-{d:02d}" if y else f"--{m:02d}-{d:02d}"


def _param(kind: str, m: re.Match[str]) -> tuple[str, str] | None:
    g = m.groups()
    text = m.group(0)
    if kind in ("email", "host"):
        return kind, text.lower()
    if kind in ("ip", "version"):
        return kind, text.lower().lstrip("v")
    if kind == "date_iso":
        return "date", _date(g[0], int(g[1]), int(g[2]))
    if kind == "date_md":
        return "date", _date(g[2], _MONTHS[g[0].lower()], int(g[1]))
    if kind == "date_dm":
        return "date", _date(g[2], _MONTHS[g[1].lower()], int(g[0]))
    if kind == "date_us":
        return "date", _date(g[2], int(g[0]), int(g[1]))
    if kind == "time":
        return "time", f"{int(g[0]):02d}:{g[1]}"
    if kind == "amount_pre":
        return "amount", f"{_norm_number(g[1])} {_CURRENCY[g[0]]}"
    if kind == "amount_post":
        return "amount", f"{_norm_number(g[0])} {_CURRENCY[g[1].lower()]}"
    if kind == "currency":
        return "currency", _CURRENCY[g[0].lower()]
    if kind == "id":
        value = text.lstrip("#").lower()
        if re.fullmatch(r"x\d+", value):
            value = value[1:]
        if value.isdigit():
            return "num", str(int(value))
        return "id", value
    if kind == "hyphen":
        low = text.lower()
        return None if low in _COMMON_HYPHENS else ("name", low)
    if kind == "num":
        return "num", _norm_number(text.lower().lstrip("x"))
    return None


def task_signature(task: str) -> TaskSignature:
    """Extract the signature of `task` (any text; never raises)."""
    found: list[tuple[str, str]] = []

    def keep(kind: str) -> Callable[[re.Match[str]], str]:
        def sub(m: re.Match[str]) -> str:
            p = _param(kind, m)
            if p is None:
                return m.group(0)
            found.append(p)
            return f" {_ph(len(found) - 1)} "

        return sub

    text = task.replace("’", "'")
    for kind, pattern in _PATTERNS:
        needs = _NEEDS.get(kind)
        if needs is None or any(c in text for c in needs):
            text = pattern.sub(keep(kind), text)
    raw = _TOKEN.findall(text)
    tokens: list[str] = []
    for t in raw:
        t = t.removesuffix("'s").removesuffix("'")
        low = t.lower()
        if low in _NUMBER_WORDS:
            found.append(("num", _NUMBER_WORDS[low]))
            t = _ph(len(found) - 1)
        elif low in _ENVS:
            found.append(("env", _ENVS[low]))
            t = _ph(len(found) - 1)
        elif low in _RELATIVE_DAYS:
            found.append(("date", _RELATIVE_DAYS[low]))
            t = _ph(len(found) - 1)
        tokens.append(t)
    lows = [t.lower() for t in tokens]
    action, polarity = _intent(lows)

    consumed: set[int] = set()  # token positions inside a from/to segment
    params: set[tuple[str, str]] = set()
    if "from" in lows:
        i = lows.index("from")
        seg_from, end = _segment(tokens, lows, i + 1, found)
        if end < len(lows) and lows[end] in ("to", "into"):
            seg_to, end2 = _segment(tokens, lows, end + 1, found)
            consumed.update(range(i, end2))
            if seg_to:
                params.add(("to", "|".join(seg_to)))
            if seg_from:
                params.add(("from", "|".join(seg_from)))
    else:
        # "into main" vs "into release": a target named by words is a name
        for j, w in enumerate(lows):
            if w in ("to", "into"):
                seg, end = _segment(tokens, lows, j + 1, found)
                if not any(tokens[k].startswith("\x00") for k in range(j + 1, end)):
                    params.update(("name", v) for v in seg)
    for pos, t in enumerate(tokens):
        if pos in consumed:
            continue
        if t.startswith("\x00"):
            params.add(found[_idx(t)])
    params.update(_names(tokens, lows, consumed))
    kinds = {k for k, _ in params}
    if action in ("move", "send") and "amount" in kinds:
        action = "transfer"  # moving money
    elif action == "move" and "from" in kinds and any(k == "date" for k, _ in found):
        action = "reschedule"  # moving something in time
    return TaskSignature(action, polarity, tuple(sorted(params)))


QUERY_CACHE_SIZE = 4096  # distinct task texts whose signature a process remembers
QUERY_CACHE_MAX_CHARS = 1024  # longer texts are extracted every time (bounds the memory held)


@lru_cache(maxsize=QUERY_CACHE_SIZE)
def _cached_signature(task: str) -> TaskSignature:
    return task_signature(task)


def query_signature(task: str) -> TaskSignature:
    """:func:`task_signature` of a lookup's task, remembered for the last
    ``QUERY_CACHE_SIZE`` distinct texts of at most ``QUERY_CACHE_MAX_CHARS`` characters (an
    agent asks the same task on every step). The extraction is pure and signatures are
    immutable, so a remembered one is the one a new extraction would return."""
    if len(task) > QUERY_CACHE_MAX_CHARS:
        return task_signature(task)
    return _cached_signature(task)


def _intent(lows: list[str]) -> tuple[str | None, int]:
    best: tuple[int, int, str, int] | None = None  # (rank, position, action, polarity)
    has_access = any(w in _ACCESS_NOUNS for w in lows)
    for pos in range(len(lows)):
        for n in (3, 2, 1):
            phrase = " ".join(lows[pos : pos + n])
            hit = _SPECIFIC.get(phrase)
            rank = 0
            if hit is None:
                hit, rank = _GENERIC.get(phrase), 1
            if hit is None:
                continue
            act, pol = hit
            if act in ("add", "give") and pol > 0 and has_access:
                act, pol, rank = "grant", 1, 0
            if act == "add" and pol < 0 and has_access:
                act, pol, rank = "grant", -1, 0
            if any(w in _NEGATIONS for w in lows[max(0, pos - 2) : pos]):
                pol = -pol
            cand = (rank, pos, act, pol)
            if best is None or cand[:2] < best[:2]:
                best = cand
            break
    if best is None:
        return None, 1
    return best[2], best[3]


def _segment(
    tokens: list[str], lows: list[str], start: int, found: list[tuple[str, str]]
) -> tuple[list[str], int]:
    """The content of one side of a direction, from `start` to the next boundary."""
    out: list[str] = []
    pos = start
    while pos < len(lows):
        w = lows[pos]
        if w in ("to", "into") or w in _SEGMENT_END or w in ".,;:!?":
            break
        if tokens[pos].startswith("\x00"):
            out.append(found[_idx(tokens[pos])][1])
        elif w not in _STOP and w not in _SPECIFIC and w not in _GENERIC:
            out.append(w)
        pos += 1
    return sorted(set(out)), pos


def _names(tokens: list[str], lows: list[str], consumed: set[int]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    sentence_start = True
    for pos, t in enumerate(tokens):
        if t in ".!?":
            sentence_start = True
            continue
        if t.startswith("\x00") or t in ",;:":
            sentence_start = False
            continue
        low = lows[pos]
        is_name = False
        if not sentence_start and t[0].isupper() and len(t) > 1 and pos not in consumed:
            acronym = t.isupper() and len(t) <= 4
            if not acronym and low not in _NOT_NAMES and low not in _MONTHS and low not in _STOP:
                is_name = low not in _SPECIFIC and low not in _GENERIC
        if not is_name and pos not in consumed and _plain(low):
            before = lows[pos - 1] if pos > 0 else ""
            after = lows[pos + 1] if pos + 1 < len(lows) else ""
            is_name = before in _ANCHOR_AFTER or after in _ANCHOR_BEFORE
            if low in _ANCHOR_AFTER or low in _ANCHOR_BEFORE:
                is_name = False
        if is_name:
            out.add(("name", low))
        sentence_start = False
    return out


def _plain(low: str) -> bool:
    return (
        low.isalpha()
        and low not in _STOP
        and low not in _SPECIFIC
        and low not in _GENERIC
        and low not in _NOT_NAMES
        and low not in _MONTHS
    )
