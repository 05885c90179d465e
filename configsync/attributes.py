"""Which config files git stores through a filter (Git LFS, git-crypt, ...), from the tree's
``.gitattributes`` files, the same way for a working tree and a commit.

A filtered file is one thing in the working tree (what the smudge filter wrote) and another in
git (a pointer, or ciphertext): the pull-request check would read the one and the daemon serve
the other. So a config file with a ``filter`` attribute is an error wherever it is read.

git's rules, as far as a verdict needs them (``gitattributes(5)``): a ``.gitattributes`` file
applies to its folder and below, a deeper file overrides a shallower one, and within one file the
last matching line wins; a pattern without ``/`` matches a name at any depth, one with ``/`` the
path from the file's folder; ``*``, ``?``, ``[...]`` and ``**`` as in ``.gitignore``; a quoted
pattern is C-quoted; ``[attr]name ...`` defines a macro (``binary`` is built in); ``-filter``
and ``!filter`` unset it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ATTRIBUTES_NAME", "Filtered", "filtered_paths"]

ATTRIBUTES_NAME = ".gitattributes"


@dataclass(frozen=True, slots=True)
class Filtered:
    """Why a path goes through a filter: the line that says so."""

    filter: str  # "lfs", "crypt", ...
    file: str  # the .gitattributes that says it
    line: int
    pattern: str


@dataclass(frozen=True, slots=True)
class _Rule:
    folder: str  # "" for the root
    regex: re.Pattern[str]
    basename: bool  # a pattern without "/": matched against the name alone
    filter: str | None  # None: unset
    file: str
    line: int
    pattern: str


def _unquote(text: str) -> str:
    """A C-quoted pattern (``"a\\303\\251.md"``), as git writes names with unusual bytes."""
    inner = text[1:-1].encode("utf-8").decode("unicode_escape")
    return inner.encode("latin-1", "replace").decode("utf-8", "replace")


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _rules(file: str, text: str, macros: dict[str, list[str]]) -> list[_Rule]:
    folder = file.rpartition("/")[0]
    rules = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith('"'):
            end = line.find('"', 1)
            while end != -1 and line[end - 1] == "\\":
                end = line.find('"', end + 1)
            if end == -1:
                continue
            pattern, attrs = _unquote(line[:end + 1]), line[end + 1:].split()
        else:
            pattern, *attrs = line.split()
        if pattern.startswith("[attr]"):
            macros[pattern[len("[attr]"):]] = attrs
            continue
        if pattern.endswith("/"):
            continue  # a folder pattern sets nothing on the files in it
        expanded = [a for attr in attrs for a in [*macros.get(attr, []), attr]]
        value: str | bool | None = False  # False: this line says nothing about filter
        for attr in expanded:
            if attr.startswith("filter="):
                value = attr[len("filter="):]
            elif attr in ("-filter", "!filter"):
                value = None
        if value is False:
            continue
        anchored = "/" in pattern
        rules.append(_Rule(folder, _regex(pattern.lstrip("/")), not anchored,
                           value if isinstance(value, str) else None, file, number, pattern))
    return rules


def filtered_paths(files: Mapping[str, str], paths: Sequence[str]) -> dict[str, Filtered]:
    """The ``paths`` that a ``filter`` attribute applies to, given the text of every
    ``.gitattributes`` of the tree (path → text)."""
    macros: dict[str, list[str]] = {"binary": ["-diff", "-merge", "-text"]}
    ordered = sorted(files, key=lambda f: (f.count("/"), f))  # the root first, deeper later
    rules = [rule for file in ordered for rule in _rules(file, files[file], macros)]
    found = {}
    for path in paths:
        verdict: _Rule | None = None
        for rule in rules:
            prefix = rule.folder + "/" if rule.folder else ""
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            target = rest.rpartition("/")[2] if rule.basename else rest
            if rule.regex.match(target):
                verdict = rule
        if verdict is not None and verdict.filter is not None:
            found[path] = Filtered(verdict.filter, verdict.file, verdict.line, verdict.pattern)
    return found
