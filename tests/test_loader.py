"""The safe YAML loader: every bad input is a YamlError with the exact message and position."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configsync.loader import MAX_DEPTH, YamlError, load_yaml

BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(("text", "line", "column", "message"), [
    ("a: 1\nb: 2\na: 3\n", 3, 1, "duplicate key `a` (first defined on line 1)"),
    ("outer:\n  x: 1\n  x: 2\n", 3, 3, "duplicate key `x` (first defined on line 2)"),
    ("a: [1, 2\nb: 3\n", 2, 2,
     "invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence)"),
    ("a: b: c\n", 1, 5, "invalid YAML: mapping values are not allowed in this context"),
    ("a: !!python/object:os.system x\n", 1, 4,
     "tag !!python/object:os.system is not allowed: only plain YAML values (strings, numbers, "
     "booleans, null, lists, mappings)"),
    ("a: !!python/object/apply:os.system [ls]\n", 1, 4,
     "tag !!python/object/apply:os.system is not allowed: only plain YAML values (strings, "
     "numbers, booleans, null, lists, mappings)"),
    ("a: !!binary aGVsbG8=\n", 1, 4,
     "tag !!binary is not allowed: only plain YAML values (strings, numbers, booleans, null, "
     "lists, mappings)"),
    ("a: !custom {x: 1}\n", 1, 4,
     "tag !custom is not allowed: only plain YAML values (strings, numbers, booleans, null, "
     "lists, mappings)"),
    ("- a\n- b\n", 1, 1, "top level must be a mapping of keys to values (got a list)"),
    ("just text\n", 1, 1, "top level must be a mapping of keys to values (got a string)"),
    ("42\n", 1, 1, "top level must be a mapping of keys to values (got a number)"),
    ("", 1, 1, "file is empty; it must be a mapping of keys to values"),
    ("  \n\n", 1, 1, "file is empty; it must be a mapping of keys to values"),
    ("# only a comment\n", 1, 1, "file is empty; it must be a mapping of keys to values"),
    ("a: b\x07c\n", 1, 5, "invalid YAML: control characters are not allowed (character #x0007)"),
    (BOMB, 5, 4, "too many values after expanding aliases (possible alias bomb)"),
    ("a: &x [1, *x]\n", 1, 4, "an alias refers to a value that contains it (recursive alias)"),
    ("a: *nowhere\n", 1, 4, "invalid YAML: found undefined alias `nowhere`"),
    ("[" * 5000 + "]" * 5000, 1, MAX_DEPTH + 1, f"nested deeper than {MAX_DEPTH} levels"),
    ("- " * 3000 + "x\n", 1, 2 * MAX_DEPTH + 1, f"nested deeper than {MAX_DEPTH} levels"),
    ("a: 1\n---\nb: 2\n", 2, 1,
     "invalid YAML: but found another document (expected a single document in the stream)"),
    ("[a, b]: 1\n", 1, 1, "a mapping key must be a plain value, not a list or mapping"),
    ("a:\n  <<: [1]\n", 2, 8, "a merge key (<<) takes a mapping or a list of mappings"),
])
def test_bad_yaml(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(YamlError) as info:
        load_yaml(text)
    assert (info.value.line, info.value.column, info.value.message) == (line, column, message)


@pytest.mark.parametrize(("raw", "line", "column", "message"), [
    (b"a: \xff\n", 1, 4, "not valid UTF-8 (byte 0xff); save the file as UTF-8"),
    (b"a: 1\nb: caf\xc3\xa9 \xfe\n", 2, 10, "not valid UTF-8 (byte 0xfe); save the file as UTF-8"),
    (b"\xff\xfea\x00:\x00", 1, 1, "not valid UTF-8 (byte 0xff); save the file as UTF-8"),
])
def test_bad_bytes(raw: bytes, line: int, column: int, message: str) -> None:
    with pytest.raises(YamlError) as info:
        load_yaml(raw)
    assert (info.value.line, info.value.column, info.value.message) == (line, column, message)


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(YamlError) as info:
        load_yaml(b"a: " + b"x" * 100, max_bytes=50)
    assert info.value.message == ("file is 103 bytes, over the limit of 50 "
                                  "(limits.max_file_bytes in configsync.yaml)")
    assert load_yaml(b"a: " + b"x" * 47, max_bytes=50).data == {"a": "x" * 47}


@pytest.mark.parametrize(("text", "data"), [
    ("a: 1\nb: [x, 2.5]\nc: {d: true, e: null}\n",
     {"a": 1, "b": ["x", 2.5], "c": {"d": True, "e": None}}),
    ("on: yes\n1: 2\nnull: x\n", {"on": True, "1": 2, "null": "x"}),  # keys are their text
    ("d: 2024-01-01\n", {"d": "2024-01-01"}),  # timestamps stay strings
    ("\ufeffa: 1\n", {"a": 1}),
    ("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n",
     {"base": {"x": 1, "y": 2}, "c": {"x": 1, "y": 3}}),
    ("t: &t [a, b]\nu: *t\n", {"t": ["a", "b"], "u": ["a", "b"]}),
    ("s: !!str 12\ni: !!int '7'\n", {"s": "12", "i": 7}),
    ("p: |\n  line one\n  line two\n", {"p": "line one\nline two\n"}),
])
def test_good_yaml(text: str, data: object) -> None:
    assert load_yaml(text).data == data


def test_bytes_and_text_load_the_same() -> None:
    text = "name: café\nlist: [1, 2]\n"
    assert load_yaml(text.encode()).data == load_yaml(text).data


@pytest.mark.parametrize(("path", "key", "position"), [
    (["a"], False, (1, 4)),
    (["a"], True, (1, 1)),
    (["b", 1], False, (4, 5)),
    (["c", "d"], False, (6, 6)),
    (["c", "d"], True, (6, 3)),
    (["c", "missing"], False, (5, 1)),  # a missing key: the mapping that lacks it
    (["missing"], False, (1, 1)),
    (["b", 7], False, (2, 1)),
    (["m", "x"], False, (9, 19)),
    (["m", "z"], False, (8, 6)),  # found through a merge key
])
def test_locate(path: list[str | int], key: bool, position: tuple[int, int]) -> None:
    doc = load_yaml("a: 1\nb:\n  - x\n  - y\nc:\n  d: 2\nbase: &base\n  z: 0\n"
                    "m: {<<: *base, x: 5}\n")
    assert doc.locate(path, key=key) == position


def test_locate_after_pickling() -> None:
    import pickle

    doc = pickle.loads(pickle.dumps(load_yaml("a:\n  b: 1\n")))
    assert doc.data == {"a": {"b": 1}}
    assert doc.locate(["a", "b"]) == (2, 6)


def test_yaml_error_pickles() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(YamlError("bad", 3, 4)))
    assert (err.message, err.line, err.column) == ("bad", 3, 4)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash(raw: bytes) -> None:
    try:
        doc = load_yaml(raw, max_bytes=1500)
    except YamlError as exc:
        assert exc.line >= 1 and exc.column >= 1 and exc.message
    else:
        assert isinstance(doc.data, dict)


_yaml_text = st.text(
    alphabet=st.sampled_from(list("abc:-[]{}&*!|>'\"#,? \n\t0123456789.<~%@`")), max_size=400)


@settings(max_examples=500, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(_yaml_text)
def test_random_yaml_syntax_never_crashes(text: str) -> None:
    try:
        doc = load_yaml(text)
    except YamlError as exc:
        assert exc.line >= 1 and exc.column >= 1
    else:
        assert isinstance(doc.data, dict)


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(min_size=1, max_size=8), children, max_size=4),
    max_leaves=30)


@settings(max_examples=200, deadline=2000)
@given(st.dictionaries(st.text(min_size=1, max_size=10), _values, min_size=1, max_size=6))
def test_random_structures_round_trip(data: dict[str, object]) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        loaded = load_yaml(text).data
    except YamlError:
        return  # e.g. a structure nested past MAX_DEPTH; never a crash
    assert yaml.safe_load(yaml.safe_dump(loaded)) == yaml.safe_load(text)
