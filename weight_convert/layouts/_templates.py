"""The key-template engine of the checkpoint layouts. Framework-free, and knows no family.

A layout's key rules are ordered pairs ``(reference prefix, layout prefix)`` of templates, used in
both directions. A template may hold stage / block indices as ``{i}``, ``{j}`` or a linear form
such as ``{2i+1}``; the first rule whose template matches a key decides its name. A rule whose
reference side is None marks keys outside the reference model: they are dropped (``DROPPED``)
and counted, never renamed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

__all__ = ["DROPPED", "KeyRule", "dropped_note", "leaf", "map_keys", "rename"]

#: (reference prefix or None, layout prefix)
KeyRule = tuple[str | None, str]

#: ``rename`` result for a layout key a rule marks as outside the reference model
DROPPED = ""

_PLACEHOLDER = re.compile(r"\{(\d*)([ij])(?:\+(\d+))?\}")


@dataclass(frozen=True)
class _Template:
    regex: re.Pattern
    slots: tuple[tuple[int, str, int], ...]  # (a, var, b): the number is a * var + b
    parts: tuple[str, ...]  # literal text around the slots, len(slots) + 1 entries

    def match(self, key: str) -> tuple[dict[str, int], str] | None:
        """Index values and the rest of the key, or None."""
        m = self.regex.match(key)
        if m is None:
            return None
        values: dict[str, int] = {}
        for (a, var, b), text in zip(self.slots, m.groups(), strict=True):
            n = int(text)
            if n < b or (n - b) % a:
                return None
            v = (n - b) // a
            if values.setdefault(var, v) != v:
                return None
        return values, key[m.end() :]

    def render(self, values: Mapping[str, int], rest: str) -> str:
        out = [self.parts[0]]
        for (a, var, b), text in zip(self.slots, self.parts[1:], strict=True):
            out += [str(a * values[var] + b), text]
        return "".join(out) + rest


@cache
def _template(text: str) -> _Template:
    slots, parts, pattern, pos = [], [], "", 0
    for m in _PLACEHOLDER.finditer(text):
        parts.append(text[pos : m.start()])
        pattern += re.escape(text[pos : m.start()]) + r"(\d+)"
        slots.append((int(m.group(1) or 1), m.group(2), int(m.group(3) or 0)))
        pos = m.end()
    parts.append(text[pos:])
    pattern += re.escape(text[pos:])
    return _Template(re.compile(pattern), tuple(slots), tuple(parts))


def rename(key: str, rules: Iterable[KeyRule], reverse: bool) -> str | None:
    """Layout key -> reference key (``reverse=False``) or back; None when no rule matches,
    ``DROPPED`` for a layout key outside the reference model."""
    for ours, theirs in rules:
        if ours is None:
            if not reverse and key.startswith(theirs):
                return DROPPED
            continue
        src, dst = (ours, theirs) if reverse else (theirs, ours)
        hit = _template(src).match(key)
        if hit is not None:
            return _template(dst).render(*hit)
    return None


def map_keys(
    keys: Iterable[str], rules: Iterable[KeyRule]
) -> tuple[dict[str, str], list[str], list[str]]:
    """Layout key -> reference key for every key a rule covers, the keys none covers, and the
    keys a rule marks as outside the reference model."""
    rules = tuple(rules)
    mapping, unmatched, dropped = {}, [], []
    for key in keys:
        new = rename(key, rules, reverse=False)
        if new is None:
            unmatched.append(key)
        elif new == DROPPED:
            dropped.append(key)
        else:
            mapping[key] = new
    return mapping, unmatched, dropped


def leaf(key: str) -> str:
    """The last dotted component of ``key``."""
    return key.rsplit(".", 1)[-1]


def dropped_note(dropped: list[str]) -> str:
    """The note counting the keys outside the model, by their first component."""
    groups: dict[str, int] = {}
    for key in dropped:
        groups[key.split(".", 1)[0]] = groups.get(key.split(".", 1)[0], 0) + 1
    parts = ", ".join(f"{name} ({n})" for name, n in groups.items())
    return f"{len(dropped)} tensor(s) outside the model dropped: {parts}"
