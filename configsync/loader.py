"""Safe YAML loading with a line and column for every value.

Only libyaml's safe composer (or PyYAML's pure-Python safe one when libyaml is missing) ever sees
the text; we build Python values from its node graph ourselves, so that we can

* reject duplicate keys (PyYAML silently keeps the last one),
* reject every tag outside the JSON-like core (``!!python/object`` and friends),
* bound alias expansion (billion laughs) and nesting depth (libyaml's composer recurses in C and
  crashes the interpreter on very deep input, so deep input is measured with the event parser,
  which does not recurse, before it is composed; our limit fires before libyaml's own, which
  0.2.6 added: see :func:`_check_depth` and docs/DESIGN.md "YAML: what the loader accepts"),
* keep the node graph, so that a diagnostic about ``tools[1]`` can point at its line and column.

Plain scalars resolve by the YAML 1.2 core schema (what editors and JSON Schema tools read:
``1e0`` and ``0o17`` are numbers, ``yes`` and ``1:20`` are text); one that a YAML 1.1 reader
makes into a different non-string value is noted in :attr:`Document.ambiguous` for the
validator to judge (docs/DESIGN.md, "YAML: what the loader accepts"). Mapping keys are always
their source text (``on:`` is the key ``"on"``, not ``True``): config keys are names. Dates
stay strings. Everything here knows nothing of pydantic, git or Redis.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ConfigsyncError

__all__ = ["MAX_DEPTH", "VALUE_ALLOWANCE", "Ambiguity", "Document", "YamlError", "load_yaml",
           "yaml11_reading"]

MAX_DEPTH = 100
"""Deepest nesting of mappings and sequences a config file may have."""

VALUE_ALLOWANCE = 10_000
"""A file may hold at most ``len(text) + VALUE_ALLOWANCE`` values (mappings, lists and scalars,
keys not counted) once its aliases are expanded; more is an alias bomb (billion laughs)."""

_BOMB = "too many values after expanding aliases (possible alias bomb)"

_BaseLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_CORE = "tag:yaml.org,2002:"
_STR = _CORE + "str"
_MAP = _CORE + "map"
_SEQ = _CORE + "seq"
_MERGE = _CORE + "merge"
_INT, _FLOAT, _BOOL, _NULL = (_CORE + t for t in ("int", "float", "bool", "null"))


class _Core12(yaml.resolver.BaseResolver):
    """Implicit tags of the YAML 1.2 core schema (YAML 1.2.2, 10.3.2), what editors,
    GitHub Actions and check-jsonschema read: PyYAML's own resolver machinery, given the 1.2
    table instead of its YAML 1.1 one. Everything else is a string."""


for _tag, _pattern, _first in [
    (_MERGE, r"^(?:<<)$", ["<"]),  # (YAML 1.1's merge key, which configsync keeps)
    (_NULL, r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    (_BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    (_INT, r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (_FLOAT, r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
             r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", list("-+.0123456789")),
]:
    _Core12.add_implicit_resolver(_tag, re.compile(_pattern), _first)


def _int12(text: str) -> int:
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _float12(text: str) -> float:
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return float("-inf") if text.startswith("-") else float("inf")
    return float("nan") if lowered == ".nan" else float(text)


_SCALARS: dict[str, Any] = {
    _INT: lambda node: _int12(node.value),
    _FLOAT: lambda node: _float12(node.value),
    _BOOL: lambda node: node.value in ("true", "True", "TRUE"),
    _NULL: lambda node: None,
}
_KEY_TAGS = frozenset([_STR, *_SCALARS])
_RESOLVED: dict[str, str] = {}

_YAML11 = yaml.resolver.Resolver()  # PyYAML's YAML 1.1 table: what other readers may see
_SAFE11 = yaml.constructor.SafeConstructor()
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9]+$")
_YES_NO = frozenset("y Y n N yes Yes YES no No NO on On ON off Off OFF".split())


def yaml11_reading(text: str, value: Any) -> Any:
    """What a YAML 1.1 reader (PyYAML, ruamel in 1.1 mode, Go's yaml.v2) makes of the plain
    scalar ``text`` when that differs from ``value``, its YAML 1.2 reading, and is not a
    string: the value, or ``_NOT_A_NUMBER`` for a 1.2 integer with a leading zero that 1.1
    reads as text. ``None`` when both readings agree (the scalar is not ambiguous)."""
    if text in _YES_NO:
        return text in ("y", "Y", "yes", "Yes", "YES", "on", "On", "ON")
    tag: str = _YAML11.resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    if tag in (_INT, _FLOAT):
        other = (_SAFE11.construct_yaml_int if tag == _INT else _SAFE11.construct_yaml_float)(
            ScalarNode(tag, text))
        same = other == value or (other != other and value != value)  # (NaN is NaN)
        if isinstance(value, bool) or not isinstance(value, int | float) or not same:
            return other
    if _LEADING_ZERO.match(text) and isinstance(value, int):
        return _NOT_A_NUMBER
    return None


_NOT_A_NUMBER: Any = type("_NotANumber", (), {"__repr__": lambda self: "text"})()
_AMBIGUOUS_MAX = 64  # longer plain scalars are text in every YAML version
_YAML11_FIRST = frozenset(_YAML11.yaml_implicit_resolvers) | frozenset("yYnN")


class Ambiguity:
    """A plain scalar that YAML 1.1 and YAML 1.2 readers read differently (``value`` is what
    this loader made of it, the YAML 1.2 reading; ``yaml11`` the other)."""

    __slots__ = ("column", "line", "path", "text", "value", "yaml11")

    def __init__(self, path: tuple[str | int, ...], text: str, value: Any, yaml11: Any,
                 line: int, column: int) -> None:
        self.path, self.text, self.value, self.yaml11 = path, text, value, yaml11
        self.line, self.column = line, column

    def __reduce__(self) -> tuple[Any, ...]:
        return Ambiguity, (self.path, self.text, self.value, self.yaml11, self.line,
                           self.column)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """The safe loader, resolving plain scalars by the YAML 1.2 core schema, with a memo for
    implicit tags: the same keys and values recur in every file, and the regex resolver was
    the largest cost of loading 10,000 files."""

    yaml_implicit_resolvers = _Core12.yaml_implicit_resolvers

    def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode and implicit[0]:
            tag = _RESOLVED.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_RESOLVED) < 50_000 and len(value) < 200:
                    _RESOLVED[value] = tag
            return tag
        result: str = super().resolve(kind, value, implicit)
        return result

_KINDS = {dict: "a mapping", list: "a list", str: "a string", int: "a number", float: "a number",
          bool: "a boolean", type(None): "null"}


class YamlError(ConfigsyncError):
    """A file is not acceptable YAML; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __reduce__(self) -> tuple[type[YamlError], tuple[str, int, int]]:
        return YamlError, (self.message, self.line, self.column)


class Document:
    """A loaded YAML mapping; its node graph (for line and column) is re-made on demand.

    A node graph costs about 100 times its text in memory, so documents keep only data and
    text (also across processes); the few that need a position are composed again, which is
    safe: they already passed every check. The last graph made is kept for the next position
    asked of the same document (a file's diagnostics come together), and only that one, so
    many files with many errors cost one graph at a time.
    """

    __slots__ = ("_root", "_text", "ambiguous", "data")

    def __init__(self, data: dict[str, Any], root: MappingNode | None = None,
                 text: str | None = None, ambiguous: Sequence[Ambiguity] = ()) -> None:
        self.data = data
        self._root = root
        self._text = text
        self.ambiguous = tuple(ambiguous)  # plain scalars YAML 1.1 reads otherwise

    def __getstate__(self) -> tuple[dict[str, Any], str | None, tuple[Ambiguity, ...]]:
        return self.data, self._text, self.ambiguous  # the node graph is re-made on demand

    def __setstate__(self, state: tuple[dict[str, Any], str | None,
                                        tuple[Ambiguity, ...]]) -> None:
        self.data, self._text, self.ambiguous = state
        self._root = None

    def source(self, path: Sequence[str | int]) -> str | None:
        """The text of the plain scalar at ``path`` as written (``1.10``, ``NO``), or None
        (no such value, or not a plain scalar: quoted text, a list, a mapping)."""
        node: Node = self.root
        for part in path:
            found = _child(node, part)
            if found is None:
                return None
            node = found[1]
        if isinstance(node, ScalarNode) and not node.style:  # plain: None, or '' from libyaml
            return str(node.value)
        return None

    @property
    def root(self) -> MappingNode:
        global _recent
        if self._root is not None:
            return self._root
        text = self._text or "{}"
        recent_text, recent_root = _recent
        if recent_text is text:
            return recent_root
        root = yaml.compose(text, Loader=_Loader)
        assert isinstance(root, MappingNode)
        _recent = (text, root)
        return root

    def locate(self, path: Sequence[str | int], *, key: bool = False,
               offset: int | None = None) -> tuple[int, int]:
        """The 1-based line and column of the value at ``path`` (of its key with ``key=True``).

        A path that leaves the document stops at the deepest node that exists, so a missing
        field is reported on the mapping that lacks it. ``offset`` (a character index into a
        string value) points inside a literal block scalar (``|``) exactly, elsewhere at its start.
        """
        node: Node = self.root
        key_node: Node | None = None
        for part in path:
            found = _child(node, part)
            if found is None:
                key = True  # report the key of the mapping that lacks it
                break
            key_node, node = found
        if key and key_node is not None:
            node = key_node
        mark = node.start_mark
        if offset is not None and isinstance(node, ScalarNode) and node.style == "|" and self._text:
            return _inside_block(self._text, node, offset)
        return mark.line + 1, mark.column + 1


_recent: tuple[str | None, MappingNode] = (None, MappingNode(_MAP, []))
"""The last node graph Document.root made, with the text it was made from (by identity)."""


def _inside_block(text: str, node: ScalarNode, offset: int) -> tuple[int, int]:
    """Line and column of character ``offset`` of a literal block scalar's value."""
    first = node.start_mark.line + 1  # 0-based line of the block's first content line
    lines = text.splitlines()
    content = next((line for line in lines[first:] if line.strip()), "")
    indent = len(content) - len(content.lstrip(" "))
    before = node.value[:offset]
    line = first + before.count("\n")
    return line + 1, offset - (before.rfind("\n") + 1) + indent + 1


def _child(node: Node, part: str | int) -> tuple[Node | None, Node] | None:
    if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    if isinstance(node, MappingNode):
        merged: list[Node] = []
        for k, v in node.value:
            if k.tag == _MERGE:
                merged.extend(v.value if isinstance(v, SequenceNode) else [v])
            elif isinstance(k, ScalarNode) and k.value == str(part):
                return k, v
        for m in merged:
            found = _child(m, part)
            if found is not None:
                return found
    return None


def _tag_error(node: Node) -> YamlError:
    tag = node.tag
    shown = "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag
    return _error(f"tag {shown} is not allowed: only plain YAML values (strings, numbers, "
                  "booleans, null, lists, mappings)", node)


def _error(message: str, node: Node) -> YamlError:
    return YamlError(message, node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed node graph into plain Python values, with the checks in the docstring."""

    def __init__(self, budget: int, text: str = "") -> None:
        self.budget = budget
        self.open: set[int] = set()
        self.top: Node | None = None  # the top-level value being built, to blame for a bomb
        self.ambiguous: list[Ambiguity] = []
        self.text = text

    def tagged(self, node: ScalarNode) -> bool:
        """Whether the scalar carries an explicit tag (``!!str 5``): not ambiguous then."""
        at = node.start_mark.index  # a node's start is its first property: the tag, if any
        return self.text[at:at + 1] == "!"

    def scalar(self, node: ScalarNode, path: tuple[str | int, ...]) -> Any:
        if node.tag == _STR:
            value: Any = node.value
        else:
            construct = _SCALARS.get(node.tag)
            if construct is None:
                raise _tag_error(node)
            try:
                value = construct(node)
            except (ValueError, TypeError):  # an explicit tag on a value it cannot hold
                raise _error(f"!!{node.tag[len(_CORE):]} {node.value!r} is not a valid "
                             f"{node.tag[len(_CORE):]}: remove the tag, or fix the value",
                             node) from None
        text = node.value
        if (not node.style and len(text) <= _AMBIGUOUS_MAX and text[:1] in _YAML11_FIRST
                and not self.tagged(node)):  # plain, and no tag says what it is
            other = yaml11_reading(text, value)
            if other is not None:
                self.ambiguous.append(Ambiguity(path, text, value, other,
                                                node.start_mark.line + 1,
                                                node.start_mark.column + 1))
        return value

    def build(self, node: Node, depth: int = 0, path: tuple[str | int, ...] = ()) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _error(_BOMB, self.top or node)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if depth >= MAX_DEPTH:
            raise _error(f"nested deeper than {MAX_DEPTH} levels", node)
        if id(node) in self.open:
            raise _error("an alias refers to a value that contains it (recursive alias)", node)
        self.open.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ:
                    raise _tag_error(node)
                return [self.build(item, depth + 1, (*path, i))
                        for i, item in enumerate(node.value)]
            assert isinstance(node, MappingNode)
            if node.tag != _MAP:
                raise _tag_error(node)
            return self.mapping(node, depth, path)
        finally:
            self.open.discard(id(node))

    def mapping(self, node: MappingNode, depth: int,
                path: tuple[str | int, ...] = ()) -> dict[str, Any]:
        result: dict[str, Any] = {}
        inherited: dict[str, Any] | None = None
        build = self.build
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                inherited = inherited if inherited is not None else {}
                self.merge(value_node, depth, inherited, path)
                continue
            if key_node.__class__ is not ScalarNode:
                raise _error("a mapping key must be a plain value, not a list or mapping",
                             key_node)
            if key_node.tag not in _KEY_TAGS:
                raise _tag_error(key_node)
            key = key_node.value
            if key in result:
                first = next(k for k, _ in node.value if getattr(k, "value", None) == key)
                raise _error(f"duplicate key `{key}` (first defined on line "
                             f"{first.start_mark.line + 1})", key_node)
            if depth == 0:
                self.top = value_node
            if value_node.__class__ is ScalarNode:
                self.budget -= 1
                if self.budget < 0:
                    raise _error(_BOMB, self.top or value_node)
                result[key] = self.scalar(value_node, (*path, key))
            else:
                result[key] = build(value_node, depth + 1, (*path, key))
        if inherited:
            for key, value in inherited.items():
                result.setdefault(key, value)
        return result

    def merge(self, value_node: Node, depth: int, into: dict[str, Any],
              path: tuple[str | int, ...] = ()) -> None:
        sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        for source in sources:
            if not isinstance(source, MappingNode):
                raise _error("a merge key (<<) takes a mapping or a list of mappings", source)
            for key, value in self.build(source, depth + 1, path).items():
                into.setdefault(key, value)


def _decode(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = raw[exc.start]
        raise YamlError(f"not valid UTF-8 (byte 0x{bad:02x}); save the file as UTF-8",
                        line, column) from None
    return text[1:] if text.startswith("\ufeff") else text


def _check_depth(text: str) -> None:
    """Refuse input nested deeper than MAX_DEPTH, with our message, before any library limit.

    Every level of nesting costs one of ``[{-?`` or a deeper indent, so most files are cleared by
    counting; only the rest pay for a pass of the (iterative) event parser. libyaml's composer
    recurses in C, and libyaml 0.2.6 (PyYAML 6.0.4's wheels) refuses nesting past its own limit
    while scanning ahead, before an event at depth MAX_DEPTH + 1 reaches us. So when libyaml's
    pass stops with any error, a second libyaml pass over the text before the stop decides;
    when even that cannot, PyYAML's pure-Python parser (no nesting limit in any release)
    measures the whole text. The verdict and its position do not depend on the installed
    versions (issue 7; docs/DESIGN.md, "YAML: what the loader accepts").
    """
    cheap_bound = sum(text.count(c) for c in "[{-?") + int((2 * len(text)) ** 0.5) + 1
    if cheap_bound <= MAX_DEPTH:
        return
    if _BaseLoader is not yaml.SafeLoader:
        try:
            _measure_depth(_Loader(text))
            return
        except yaml.YAMLError as exc:  # a syntax error, or libyaml's own nesting limit
            end = _offset(text, exc)
        # libyaml scanned cleanly up to where it stopped: the text before that point holds at
        # most its limit, so a pass over it alone finds the first too-deep collection, fast.
        # (Events up to that collection do not depend on what the cut removes: a simple key
        # is shorter than 1,024 characters.) Clean to the cut: it was a syntax error.
        try:
            _measure_depth(_Loader(text[:end]))
            return
        except yaml.YAMLError:
            pass  # the cut itself broke the text: measure it all, below
    loader = _DepthLoader(text)
    try:
        _measure_depth(loader)
    except yaml.YAMLError:
        # A syntax error (the composer reports it), unless the scanner, which runs ahead of the
        # parser, had already opened more than MAX_DEPTH collections before it: then the file
        # is too deep whatever follows, and a library's own limit could otherwise speak first.
        if loader.too_deep_at is not None:
            raise _depth_error(loader.too_deep_at) from None


def _measure_depth(loader: Any) -> None:
    """Read ``loader``'s events; raise at the first collection deeper than MAX_DEPTH."""
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _depth_error(event.start_mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def _offset(text: str, exc: yaml.YAMLError) -> int:
    """The character offset at which a parser error points (0 when it has no mark)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    index = getattr(mark, "index", 0)  # characters, in libyaml and in PyYAML alike
    return max(0, min(int(index), len(text)))


def _depth_error(mark: Any) -> YamlError:
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return YamlError(f"nested deeper than {MAX_DEPTH} levels", line, column)


class _DepthLoader(yaml.SafeLoader):
    """PyYAML's pure-Python safe loader, which notes where its scanner (which runs ahead of the
    parser) first holds more than MAX_DEPTH open collections."""

    too_deep_at: Any = None

    def fetch_more_tokens(self) -> None:
        super().fetch_more_tokens()
        if self.too_deep_at is None and self.flow_level + len(self.indents) > MAX_DEPTH:
            self.too_deep_at = self.tokens[-1].start_mark if self.tokens else self.get_mark()


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def load_yaml(raw: bytes | str, *, max_bytes: int | None = None) -> Document:
    """Parse one config file whose top level must be a mapping.

    Raises :class:`YamlError` (with a 1-based line and column) for anything that is not plain,
    safe, UTF-8 YAML of a sane size; never anything else for any input.
    """
    size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
    if max_bytes is not None and size > max_bytes:
        raise YamlError(f"file is {size} bytes, over the limit of {max_bytes} "
                        "(limits.max_file_bytes in configsync.yaml)")
    text = _decode(raw) if isinstance(raw, bytes) else raw
    if not text.strip():
        raise YamlError("file is empty; it must be a mapping of keys to values")
    try:
        _check_depth(text)
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            message = f"{exc.problem} ({exc.context})"
        if (exc.context or "").startswith("while scanning a quoted scalar") and exc.context_mark:
            mark = exc.context_mark  # where the quote opened, not where the file ended
            message = "this quote is never closed; close it, or write the value unquoted"
        elif "cannot start any token" in message and mark is not None and text[
                mark.index:mark.index + 1] == "\t":
            message = "a tab character; YAML indents with spaces only (and tabs cannot start " \
                      "a value): replace the tab with spaces"
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        if message == "found undefined alias" and mark:
            alias = re.match(r"\*([^\s,\[\]{}]+)", text[mark.index:])
            message += f" `{alias.group(1)}`" if alias else ""
        elif (exc.context or "").startswith("found duplicate anchor") and mark:
            anchor = re.match(r"&([^\s,\[\]{}]+)", text[mark.index:])
            first = exc.context_mark.line + 1 if exc.context_mark else line
            message = (f"duplicate anchor `&{anchor.group(1) if anchor else '?'}` (first defined "
                       f"on line {first}); give each anchor its own name")
        raise YamlError(f"invalid YAML: {message}", line, column) from None
    except yaml.YAMLError as exc:  # ReaderError: control characters and the like
        raise YamlError(f"invalid YAML: {_reader_message(exc)}", *_reader_position(text, exc)) \
            from None
    if root is None:
        raise YamlError("file is empty; it must be a mapping of keys to values")
    builder = _Builder(budget=len(text) + VALUE_ALLOWANCE, text=text)
    data = builder.build(root)
    if not isinstance(root, MappingNode) or not isinstance(data, dict):
        raise _error(f"top level must be a mapping of keys to values (got {_kind(data)})", root)
    # the node graph is re-made only if a position is asked
    return Document(data, None, text, builder.ambiguous)


def _reader_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"{exc.reason} (character #x{exc.character:04x})" if isinstance(
            exc.character, int) else str(exc.reason)
    return str(exc).splitlines()[0]


def _reader_position(text: str, exc: yaml.YAMLError) -> tuple[int, int]:
    position = getattr(exc, "position", None)
    if not isinstance(position, int):
        return 1, 1
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1
