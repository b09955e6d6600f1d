"""Equivalent, faster forms of trafilatura's XPath expressions (the same nodes, in the same order).

About 40% of trafilatura's time on real pages goes to libxml2 evaluating a handful of XPath
expressions over every element of the page. Two rewrites remove most of that cost without
changing what any expression selects:

1. ``.//*[self::div or self::section][P]`` becomes ``(.//div|.//section)[P]``. libxml2 walks
   the tree for a name test in C, but evaluates a predicate node by node (~0.5 us per element
   each); the union form runs ``P`` only on the named elements. Applied only when no following
   predicate of the step is positional, except a final ``[1]`` (the first match *per parent*),
   which becomes ``[not(preceding-sibling::*[N][P])]``.
2. ``re:test(@class, 'PAT')`` becomes ``((contains(@class, 'lit') or ...) and re:test(@class,
   'PAT'))``, where the literals are ones every match of PAT must contain (read from Python's
   own regex parser), or just ``(@class and re:test(...))`` when there are too many. ``re:test``
   is a Python callback from libxml2; the guard, evaluated in C, skips it for almost every
   element. Applied only when PAT cannot match the empty string and carries no flags.

`use_rewritten_xpaths(True)` swaps the rewritten expressions into trafilatura's expression
lists in place (the lists its modules imported); `False` puts the originals back. Expressions
that use anything the rewriter does not understand are left as they are.

The rewrites were proven equal (tests/test_xpath_rewrite.py) on the lists of the trafilatura
release whose fingerprint is `TESTED_FINGERPRINT`. On any other lists (an upgrade that changed
them) nothing is rewritten and a warning says so: trafilatura runs its own expressions.
"""

from __future__ import annotations

import hashlib
import logging
import re
import re._constants as sre
import re._parser as sre_parse
from typing import Any

REGEXP_NS = "http://exslt.org/regular-expressions"
# sha256 of trafilatura 2.3.1's XPath lists (`expression_fingerprint`); see the module docstring.
TESTED_FINGERPRINT = "d523fc9888eb68f079fac9e5efeb698592cf30adc6dcf06d5f32af4fc4c6745f"
log = logging.getLogger(__name__)
MAX_GUARD_LITERALS = 8

_SELF_TESTS = re.compile(r"\s*self::[A-Za-z][\w-]*(?:\s+or\s+self::[A-Za-z][\w-]*)*\s*")
_SELF_NAME = re.compile(r"self::([A-Za-z][\w-]*)")
_RE_TEST = re.compile(r"re:test\(\s*(@[\w-]+(?:\s*\|\s*@[\w-]+)*)\s*,\s*'([^']*)'\s*\)")
_BOOLEAN_CALL = re.compile(r"(?:not|contains|starts-with|re:test|boolean|true|false)\s*\(")
_PATH = re.compile(r"[@./A-Za-z*][\w@./:*|\[\]-]*")  # a location path, no function call
_PREFIX = re.compile(r"(?<![:\w-])([A-Za-z][\w-]*):(?!:)")


def _blank_strings(source: str) -> str:
    """The source with the inside of every string literal replaced by spaces (same length), so
    brackets and keywords can be found without parsing the literals."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2)
                  + m.group(0)[-1], source)


def _closing(blank: str, start: int) -> int:
    """Index of the bracket closing the one at `start` (on the blanked source)."""
    pairs = {"[": "]", "(": ")"}
    stack = []
    for i in range(start, len(blank)):
        ch = blank[i]
        if ch in pairs:
            stack.append(pairs[ch])
        elif ch in ")]":
            if not stack or stack.pop() != ch:
                raise ValueError(f"unbalanced brackets at {i}")
            if not stack:
                return i
    raise ValueError("unbalanced brackets")


def _top_level(blank: str) -> str:
    """The blanked text with what is nested in brackets removed: `f(a)[b] or c` -> `f()[] or c`."""
    out, depth = [], 0
    for ch in blank:
        if ch in "([":
            depth += 1
            if depth == 1:
                out.append(ch)
        elif ch in ")]":
            depth -= 1
            if depth == 0:
                out.append(ch)
        elif depth == 0:
            out.append(ch)
    return "".join(out)


def _never_positional(predicate: str) -> bool:
    """True when the predicate surely evaluates to a boolean or a node-set (never a number), and
    does not use position() or last(): its result then does not depend on the node's position."""
    blank = _blank_strings(predicate).strip()
    if re.search(r"\b(?:position|last)\s*\(", blank):
        return False
    top = _top_level(blank)
    if re.search(r"\s(?:or|and)\s", top) or re.search(r"[=<>]", top):
        return True  # 'or', 'and' and comparisons bind loosest: the whole is a boolean
    call = _BOOLEAN_CALL.match(blank)
    if call and _closing(blank, call.end() - 1) == len(blank) - 1:
        return True
    return _PATH.fullmatch(top) is not None and not re.search(r"\s(?:div|mod)\s", top)


def _split_predicates(source: str, blank: str, start: int) -> tuple[list[str], int]:
    """The predicates `[..]` of a step that starts at `start`, and the index after them."""
    predicates, i = [], start
    while True:
        j = i
        while j < len(blank) and blank[j].isspace():
            j += 1
        if j >= len(blank) or blank[j] != "[":
            return predicates, i
        end = _closing(blank, j)
        predicates.append(source[j + 1 : end])
        i = end + 1


def _union_of_names(source: str) -> str:
    """Rewrite 1: `.//*[self::a or self::b][P]` -> `(.//a|.//b)[P]` where that is equivalent."""
    out, pos = [], 0
    blank = _blank_strings(source)
    for match in re.finditer(r"(\.?//)\*(?=\s*\[)", blank):
        before = blank[: match.start()].rstrip()
        if before and before[-1] not in "(|,[":
            continue  # not the start of a location path
        predicates, end = _split_predicates(source, blank, match.end())
        if not predicates or not _SELF_TESTS.fullmatch(predicates[0]):
            continue
        filters = predicates[1:]
        first_per_parent = bool(filters) and filters[-1].strip() == "1"
        if first_per_parent:
            filters = filters[:-1]
        if not all(_never_positional(p) for p in filters):
            continue
        names = _SELF_NAME.findall(predicates[0])
        axis = match.group(1)
        union = "(" + "|".join(axis + name for name in names) + ")"
        kept = "".join(f"[{p}]" for p in filters)
        if first_per_parent:  # [1] after the filters: no earlier sibling passes them
            kept += f"[not(preceding-sibling::*[{predicates[0]}]{kept})]"
        out.append(source[pos : match.start()])
        out.append(union + kept)
        pos = end
    out.append(source[pos:])
    return "".join(out)


def _alternatives(items: Any) -> set[str] | None:
    """Literals of which every match of this parsed sequence contains one, or None."""
    options: list[set[str]] = []
    run = ""
    for op, arg in items:
        if op is sre.LITERAL:
            run += chr(arg)
            continue
        if run:
            options.append({run})
        run = ""
        if op is sre.SUBPATTERN:
            inner = None if arg[1] or arg[2] else _alternatives(arg[3])  # no (?i:...) groups
            if inner:
                options.append(inner)
        elif op is sre.BRANCH:
            union: set[str] = set()
            for branch in arg[1]:
                inner = _alternatives(branch)
                if not inner:
                    break
                union |= inner
            else:
                options.append(union)
    if run:
        options.append({run})
    if not options:
        return None
    # the most selective requirement: fewest alternatives, then longest shortest literal
    return min(options, key=lambda s: (len(s), -min(map(len, s))))


def required_literals(pattern: str) -> list[str] | None:
    """Literals of which every match of `pattern` contains at least one (None if unknown).
    Literals containing another one of the set are dropped: they are implied."""
    parsed = sre_parse.parse(pattern)
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    found = _alternatives(parsed)
    if not found:
        return None
    return sorted(lit for lit in found if not any(o != lit and o in lit for o in found))


def _guarded_regex_tests(source: str) -> str:
    """Rewrite 2: put a C-evaluated necessary condition in front of each `re:test`."""
    blank = _blank_strings(source)

    def guard(match: re.Match[str]) -> str:
        argument, pattern = match.group(1), match.group(2)
        if blank[match.start()] != source[match.start()]:
            return match.group(0)  # inside a string literal
        try:
            if re.search(pattern, "") is not None:
                return match.group(0)  # matches an absent attribute: no guard is possible
            literals = required_literals(pattern)
        except re.error:
            return match.group(0)
        if (literals and len(literals) <= MAX_GUARD_LITERALS
                and not any("'" in lit for lit in literals)):
            condition = " or ".join(f"contains({argument}, '{lit}')" for lit in literals)
        else:
            condition = argument  # the attribute exists
        return f"(({condition}) and {match.group(0)})"

    return _RE_TEST.sub(guard, source)


def rewrite_xpath(source: str) -> str:
    """An equivalent, faster form of an XPath expression (the source itself when no rule
    applies or the expression uses something the rewriter does not know)."""
    prefixes = set(_PREFIX.findall(_blank_strings(source)))
    if prefixes - {"re"}:
        return source
    try:
        return _guarded_regex_tests(_union_of_names(source))
    except ValueError:
        return source


_originals: dict[str, list[Any]] = {}
_rewritten: dict[str, list[Any]] = {}
_active = False


def _expression_lists() -> dict[str, list[Any]]:
    from lxml.etree import XPath
    from trafilatura import xpaths

    return {name: value for name, value in vars(xpaths).items()
            if isinstance(value, list) and value and all(isinstance(x, XPath) for x in value)}


def expression_fingerprint() -> str:
    """sha256 over the names and sources of the installed trafilatura's own XPath lists."""
    digest = hashlib.sha256()
    for name, expressions in sorted((_originals or _expression_lists()).items()):
        digest.update(name.encode() + b"\0" + b"\0".join(x.path.encode() for x in expressions))
        digest.update(b"\n")
    return digest.hexdigest()


def _fill_caches() -> None:
    from lxml.etree import XPath

    if _originals:
        return
    tested = expression_fingerprint() == TESTED_FINGERPRINT  # before any swap: the originals
    if not tested:
        log.warning("trafilatura's XPath lists differ from the tested ones (an upgrade?): "
                    "extract.fast_xpaths rewrites nothing; trafilatura's own expressions run")
    for name, expressions in _expression_lists().items():
        _originals[name] = list(expressions)
        _rewritten[name] = [
            x if not tested or (new := rewrite_xpath(x.path)) == x.path
            else XPath(new, namespaces={"re": REGEXP_NS})
            for x in expressions
        ]


def use_rewritten_xpaths(enabled: bool) -> None:
    """Swap trafilatura's expression lists (in place) to the rewritten or the original forms."""
    global _active
    if enabled == _active:
        return
    _fill_caches()
    for name, expressions in _expression_lists().items():
        expressions[:] = (_rewritten if enabled else _originals)[name]
    _active = enabled


def rewritten_pairs() -> list[tuple[str, Any, Any]]:
    """(list name[index], original, rewritten) for every expression the rewriter changed."""
    _fill_caches()
    return [(f"{name}[{i}]", old, new)
            for name, olds in _originals.items()
            for i, (old, new) in enumerate(zip(olds, _rewritten[name], strict=True))
            if old is not new]
