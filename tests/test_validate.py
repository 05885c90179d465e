"""Every validation rule, on real config trees, asserting the exact diagnostics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configsync.repo import FolderSource
from configsync.validate import check_tree

from .conftest import SETTINGS, SUPPORT, write_tree


def check(root: Path, files: dict[str, str | bytes], *, base: bool = True) -> list[str]:
    tree = {"configsync.yaml": SETTINGS, "agents/support.yaml": SUPPORT} if base else {}
    write_tree(root, {**tree, **files})
    report = check_tree(FolderSource(root), repo_root=root)
    return [f"{d.path}:{d.line}:{d.column}: {d.severity}: {d.message}" for d in report.diagnostics]


A = "agents/a.yaml"
OK = "system_prompt: hi\nmodel: gpt-4o\n"
NO_JSON = ("has no JSON form: JSON readers in other languages cannot represent it; quote it to "
           "keep it as text")
NO_TEXT = ("prompt file has no text (it is empty, or holds only whitespace or a byte-order "
           "mark); write the prompt in it")
ONE_BASE = "an agent extends one base, its id (to build on several, let each base extend the next)"
TOO_BIG = ("is outside ±(2^53-1): JSON readers in other languages (JavaScript, Go's float64) "
           "cannot represent it exactly; quote it to keep it as text")

CASES: list[tuple[str, dict[str, str | bytes], list[str]]] = [
    ("clean", {}, []),
    ("temperature too high", {A: OK + "temperature: 3.5\n"},
     [f"{A}:3:14: error: temperature: must be at most 2 (got 3.5)"]),
    ("temperature negative", {A: OK + "temperature: -0.1\n"},
     [f"{A}:3:14: error: temperature: must be at least 0 (got -0.1)"]),
    ("temperature not a number", {A: OK + "temperature: hot\n"},
     [f"{A}:3:14: error: temperature: must be a number (got 'hot')"]),
    ("temperature quoted number", {A: OK + 'temperature: "0.5"\n'},
     [f"{A}:3:14: error: temperature: must be a number (got '0.5')"]),
    ("max_tokens zero", {A: OK + "max_tokens: 0\n"},
     [f"{A}:3:13: error: max_tokens: must be at least 1 (got 0)"]),
    ("max_tokens float", {A: OK + "max_tokens: 10.5\n"},
     [f"{A}:3:13: error: max_tokens: must be a whole number (got 10.5)"]),
    ("max_tokens bool", {A: OK + "max_tokens: true\n"},
     [f"{A}:3:13: error: max_tokens: must be a whole number (got true)"]),
    ("guardrail above 1", {A: OK + "guardrail_threshold: 1.5\n"},
     [f"{A}:3:22: error: guardrail_threshold: must be at most 1 (got 1.5)"]),
    ("unknown key with hint", {A: OK + "temprature: 0.5\n"},
     [f"{A}:3:1: error: temprature: unknown key, did you mean `temperature`?"]),
    ("unknown key without hint", {A: OK + "colour: blue\n"},
     [f"{A}:3:1: error: colour: unknown key"]),
    ("nested unknown key", {A: OK + "metadata:\n  ownr: me\n"},
     [f"{A}:4:3: error: metadata.ownr: unknown key, did you mean `owner`?"]),
    ("label not a string", {A: OK + "metadata:\n  labels: {tier: 1}\n"},
     [f'{A}:4:18: error: metadata.labels.tier: must be a string (got 1, which YAML reads as '
      'a number; quote it: "1")']),
    ("metadata not a mapping", {A: OK + "metadata: [x]\n"},
     [f"{A}:3:11: error: metadata: must be a mapping (got a list)"]),
    ("blank prompt", {A: "system_prompt: '   '\nmodel: gpt-4o\n"},
     [f"{A}:1:16: error: system_prompt: must not be empty"]),
    ("no prompt", {A: "model: gpt-4o\n"},
     [f"{A}:1:1: error: set exactly one of `system_prompt` or `system_prompt_file`"]),
    ("both prompts", {A: OK + "system_prompt_file: prompts/a.md\n", "prompts/a.md": "x"},
     [f"{A}:3:21: error: set exactly one of `system_prompt` or `system_prompt_file`"]),
    ("missing model", {A: "system_prompt: hi\n"}, [f"{A}:1:1: error: model: is required"]),
    ("empty model", {A: "system_prompt: hi\nmodel: ''\n"},
     [f"{A}:2:8: error: model: must not be empty"]),
    ("model not allowed", {A: "system_prompt: hi\nmodel: gpt-5\n"},
     [f"{A}:2:8: error: model: `gpt-5` is not an allowed model (allowed: gpt-4o, gpt-4o-mini)"]),
    ("tool not registered", {A: OK + "tools: [search, browse]\n"},
     [f"{A}:3:17: error: tools[1]: `browse` is not in the tool registry "
      "(known: calculator, search)"]),
    ("tool listed twice", {A: OK + "tools:\n  - search\n  - calculator\n  - search\n"},
     [f"{A}:6:5: error: tools[2]: `search` is listed twice"]),
    ("tools not a list", {A: OK + "tools: search\n"},
     [f"{A}:3:8: error: tools: must be a list (got 'search')"]),
    ("several errors in one file", {A: "model: gpt-5\ntemperature: 9\nextra: 1\n"},
     [f"{A}:1:1: error: set exactly one of `system_prompt` or `system_prompt_file`",
      f"{A}:1:8: error: model: `gpt-5` is not an allowed model (allowed: gpt-4o, gpt-4o-mini)",
      f"{A}:2:14: error: temperature: must be at most 2 (got 9)",
      f"{A}:3:1: error: extra: unknown key"]),
    ("errors in two files", {A: OK + "max_tokens: 0\n", "agents/b.yaml": "model: [x]\n"},
     [f"{A}:3:13: error: max_tokens: must be at least 1 (got 0)",
      "agents/b.yaml:1:1: error: set exactly one of `system_prompt` or `system_prompt_file`",
      "agents/b.yaml:1:8: error: model: must be a string (got a list)"]),
    ("yaml syntax error", {A: "model: [gpt-4o\n"},
     [f"{A}:2:1: error: invalid YAML: did not find expected ',' or ']' "
      "(while parsing a flow sequence)"]),
    ("duplicate key", {A: OK + "model: gpt-4o-mini\n"},
     [f"{A}:3:1: error: duplicate key `model` (first defined on line 2)"]),
    ("unsafe tag", {A: OK + "x: !!python/object/apply:os.system [id]\n"},
     [f"{A}:3:4: error: tag !!python/object/apply:os.system is not allowed: only plain YAML "
      "values (strings, numbers, booleans, null, lists, mappings)"]),
    ("top level list", {A: "- a\n"},
     [f"{A}:1:1: error: top level must be a mapping of keys to values (got a list)"]),
    ("empty file", {A: ""},
     [f"{A}:1:1: error: file is empty; it must be a mapping of keys to values"]),
    ("not utf-8", {A: b"system_prompt: caf\xe9\nmodel: gpt-4o\n"},
     [f"{A}:1:19: error: not valid UTF-8 (byte 0xe9); save the file as UTF-8"]),
    ("file too big", {"configsync.yaml": SETTINGS + "limits: {max_file_bytes: 130}\n",
                      A: OK + f"metadata: {{description: {'x' * 100}}}\n"},
     [f"{A}:1:1: error: file is 158 bytes, over the limit of 130 "
      "(limits.max_file_bytes in configsync.yaml)"]),
    ("bad agent id", {"agents/Support_Bot.yaml": OK},
     ["agents/Support_Bot.yaml:1:1: error: `Support_Bot` is not a valid agent id: each part of "
      "the path under agents/ must match [a-z0-9][a-z0-9._-]*"]),
    ("bad agent folder", {"agents/Team/a.yaml": OK},
     ["agents/Team/a.yaml:1:1: error: `Team/a` is not a valid agent id: each part of the path "
      "under agents/ must match [a-z0-9][a-z0-9._-]*"]),
    ("duplicate id .yaml and .yml", {"agents/support.yml": SUPPORT},
     ["agents/support.yml:1:1: error: agent id `support` is also defined by "
      "agents/support.yaml"]),
    ("other files in agents/ are ignored", {"agents/README.md": "# agents\n"}, []),
    ("extends merges deeply", {
        "agents/base.yaml": OK + "metadata: {owner: a, labels: {x: '1'}}\n",
        A: "extends: base\ntemperature: 1\nmetadata: {labels: {y: '2'}}\n"}, []),
    ("extends missing base", {A: "extends: suport\n"},
     [f"{A}:1:10: error: extends: no agent `suport`, did you mean `support`?"]),
    ("extends unknown base", {A: "extends: zzz\n"},
     [f"{A}:1:10: error: extends: no agent `zzz` (known: a, support)"]),
    ("extends cycle", {"agents/x.yaml": "extends: z\n", "agents/z.yaml": "extends: x\n"},
     ["agents/x.yaml:1:10: error: extends: cycle z → x → z",
      "agents/z.yaml:1:10: error: extends: cycle x → z → x"]),
    ("extends itself", {A: "extends: a\n"}, [f"{A}:1:10: error: extends: cycle a → a"]),
    ("extends bad id", {A: OK + "extends: Bad/ID\n"},
     [f"{A}:3:10: error: extends: must be an agent id, the path of its file under agents/ "
      "without .yaml (got 'Bad/ID')"]),
    ("base error is reported once, in the base", {
        "agents/base.yaml": OK + "temperature: 5\n", A: "extends: base\n"},
     ["agents/base.yaml:3:14: error: temperature: must be at most 2 (got 5)"]),
    ("child error is reported in the child", {
        "agents/base.yaml": OK, A: "extends: base\nmax_tokens: -1\n"},
     [f"{A}:2:13: error: max_tokens: must be at least 1 (got -1)"]),
    ("child prompt replaces the base's prompt file", {
        "agents/base.yaml": "system_prompt_file: prompts/b.md\nmodel: gpt-4o\n",
        "prompts/b.md": "Base prompt.\n", A: "extends: base\nsystem_prompt: Child.\n"}, []),
    ("missing required field in a chain points at the child", {
        "agents/base.yaml": "system_prompt: hi\nmodel: gpt-4o\nextends: a\n",
        A: "extends: base\n"},
     ["agents/a.yaml:1:10: error: extends: cycle base → a → base",
      "agents/base.yaml:3:10: error: extends: cycle a → base → a"]),
    ("extends a broken base reports only the base", {
        "agents/base.yaml": "model: [\n", A: "extends: base\n"},
     ["agents/base.yaml:2:1: error: invalid YAML: did not find expected node content "
      "(while parsing a flow node)"]),
    ("prompt file", {A: "system_prompt_file: prompts/a.md\nmodel: gpt-4o\n",
                     "prompts/a.md": "You are A.\n"}, []),
    ("prompt file missing", {A: "system_prompt_file: prompts/nope.md\nmodel: gpt-4o\n"},
     [f"{A}:1:21: error: system_prompt_file: prompts/nope.md does not exist"]),
    ("prompt file outside prompts/", {A: "system_prompt_file: ../etc/passwd\nmodel: gpt-4o\n"},
     [f"{A}:1:21: error: system_prompt_file: must be a relative path under prompts/ "
      "(got '../etc/passwd')"]),
    ("prompt file escaping prompts/", {A: "system_prompt_file: prompts/../x\nmodel: gpt-4o\n"},
     [f"{A}:1:21: error: system_prompt_file: must be a relative path under prompts/ "
      "(got 'prompts/../x')"]),
    ("prompt file missing, with a hint", {
        A: "system_prompt_file: prompts/reserch.md\nmodel: gpt-4o\n",
        "prompts/research.md": "You research.\n"},
     [f"{A}:1:21: error: system_prompt_file: prompts/reserch.md does not exist, did you mean "
      "`prompts/research.md`?"]),
    # red team's item 7: every error, not the first: a missing prompt beside a model error
    ("prompt file missing and an unknown key", {
        A: "model: gpt-4o\nsystem_prompt_file: prompts/missing.md\nbogus: 1\n"},
     [f"{A}:2:21: error: system_prompt_file: prompts/missing.md does not exist",
      f"{A}:3:1: error: bogus: unknown key"]),
    ("prompt file missing and a bad temperature, through a base", {
        "agents/base.yaml": "system_prompt_file: prompts/gone.md\nmodel: gpt-4o\n",
        A: "extends: base\ntemperature: 9\n"},
     [f"{A}:2:14: error: temperature: must be at most 2 (got 9)",
      "agents/base.yaml:1:21: error: system_prompt_file: prompts/gone.md does not exist"]),
    # issue 10: no visible text is one rule, whatever the editor wrote for "empty"
    *[(f"prompt file {name}", {A: "system_prompt_file: prompts/a.md\nmodel: gpt-4o\n",
                               "prompts/a.md": content}, [f"prompts/a.md:1:1: error: {NO_TEXT}"])
      for name, content in [("empty", b""), ("blank lines", "\n\n"), ("spaces", " \t\r\n"),
                            ("only a BOM", b"\xef\xbb\xbf"),
                            ("a BOM and a newline", b"\xef\xbb\xbf\r\n"),
                            ("zero-width spaces", "\u200b\u2060\n")]],
    ("inline prompt of zero-width spaces", {A: "system_prompt: \"\\u200b\"\nmodel: gpt-4o\n"},
     [f"{A}:1:16: error: system_prompt: must not be empty"]),
    ("extends a list: one error, not three", {A: "extends: [a, b]\n"},
     [f"{A}:1:10: error: extends: must be a string (got a list); {ONE_BASE}"]),
    ("extends a number, both prompts still said", {
        A: "extends: 5\nsystem_prompt: hi\nsystem_prompt_file: prompts/a.md\n",
        "prompts/a.md": "x"},
     [f'{A}:1:10: error: extends: must be a string (got 5, which YAML reads as a number; '
      f'quote it: "5"); {ONE_BASE}',
      f"{A}:3:21: error: set exactly one of `system_prompt` or `system_prompt_file`"]),
    ("prompt file not utf-8", {A: "system_prompt_file: prompts/a.md\nmodel: gpt-4o\n",
                               "prompts/a.md": b"ok\n\xff\n"},
     ["prompts/a.md:2:1: error: not valid UTF-8 (byte 0xff); save the file as UTF-8"]),
    ("credential in a value", {A: "system_prompt: 'key sk-abcdefghijklmnopqrstuvwxyz'\n"
                                  "model: gpt-4o\n"},
     [f"{A}:1:16: warning: system_prompt: looks like an API key (sk-…); keep credentials "
      "out of git and rotate this one"]),
    ("aws key in metadata", {A: OK + "metadata:\n  labels: {k: AKIAABCDEFGHIJKLMNOP}\n"},
     [f"{A}:4:15: warning: metadata.labels.k: looks like an AWS access key id; keep "
      "credentials out of git and rotate this one"]),
    ("github token", {A: OK + "metadata: {owner: ghp_" + "a" * 36 + "}\n"},
     [f"{A}:3:19: warning: metadata.owner: looks like a GitHub token; keep credentials out of "
      "git and rotate this one"]),
    ("pem key in a prompt file", {
        A: "system_prompt_file: prompts/a.md\nmodel: gpt-4o\n",
        "prompts/a.md": "Be nice.\n  -----BEGIN RSA PRIVATE KEY-----\nMII\n"},
     ["prompts/a.md:2:3: warning: looks like a PEM private key; keep credentials out of git "
      "and rotate this one"]),
    ("credential inside a block prompt is pinned to its line",
     {A: "system_prompt: |\n  Be helpful.\n\n  Use key sk-abcdefghijklmnopqrstuvwxyz\n"
         "model: gpt-4o\n"},
     [f"{A}:4:11: warning: system_prompt: looks like an API key (sk-…); keep credentials "
      "out of git and rotate this one"]),
    ("words that merely start like keys are fine",
     {A: "system_prompt: ask-me about AKIA and sk-learn\nmodel: gpt-4o\n"}, []),
    # numbers JSON readers in other languages cannot hold (issue 9): one line each, on the value
    ("nan", {A: OK + "temperature: .nan\n"},
     [f"{A}:3:14: error: temperature: .nan {NO_JSON}"]),
    ("infinity", {A: OK + "guardrail_threshold: .inf\n"},
     [f"{A}:3:22: error: guardrail_threshold: .inf {NO_JSON}"]),
    ("minus infinity, any spelling", {A: OK + "temperature: -.Inf\n"},
     [f"{A}:3:14: error: temperature: -.Inf {NO_JSON}"]),
    ("a float too big is infinity", {A: OK + "metadata: {labels: {x: 1.0e+400}}\n"},
     [f"{A}:3:24: error: metadata.labels.x: 1.0e+400 (read as .inf) {NO_JSON}"]),
    ("integer 2^53", {A: OK + "max_tokens: 9007199254740992\n"},
     [f"{A}:3:13: error: max_tokens: 9007199254740992 {TOO_BIG}"]),
    ("integer -2^53 in a list", {A: OK + "tools: [search, -9007199254740992]\n"},
     [f"{A}:3:17: error: tools[1]: -9007199254740992 {TOO_BIG}"]),
    ("integer 2^53-1 is fine", {A: OK + "max_tokens: 9007199254740991\n"}, []),
    ("quoted, they are text", {A: OK + "metadata: {labels: {a: '.nan', b: '9007199254740992'}}\n"},
     []),
    ("an unknown key with nan says both", {A: OK + "colour: .nan\n"},
     [f"{A}:3:1: error: colour: unknown key", f"{A}:3:9: error: colour: .nan {NO_JSON}"]),
    ("nan in a base is reported in the base, once", {
        "agents/base.yaml": OK + "metadata:\n  labels:\n    x: .NaN\n",
        A: "extends: base\n", "agents/b.yaml": "extends: base\n"},
     [f"agents/base.yaml:5:8: error: metadata.labels.x: .NaN {NO_JSON}"]),
]


def _amb_bool(text: str, value: str) -> str:
    return (f'{text} is the text "{text}" in YAML 1.2 (editors, JSON Schema, configsync) but '
            f'{value} in YAML 1.1 readers; write {value} for a boolean, or quote it: "{text}"')


def _amb_number(text: str, value: str) -> str:
    return (f"{text} is text in YAML 1.2 but the number {value} in YAML 1.1 readers; write "
            f'{value} for the number, or quote it: "{text}"')


# Issue 10.1-2: plain scalars resolve by the YAML 1.2 core schema; a scalar that YAML 1.1
# reads as another non-string value is an error in a typed field, a warning in free text.
CASES += [
    ("yaml 1.2: 1e0 is a number", {A: OK + "temperature: 1e0\n"}, []),
    ("yaml 1.2: .5 and +.5 are numbers", {A: OK + "temperature: .5\nguardrail_threshold: +.5\n"},
     []),
    ("yaml 1.2: 0o17 is 15", {A: OK + "max_tokens: 0o17\n"}, []),
    ("yaml 1.2: 0x400 is 1024", {A: OK + "max_tokens: 0x400\n"}, []),
    ("0512 is ambiguous", {A: OK + "max_tokens: 0512\n"},
     [f'{A}:3:13: error: max_tokens: 0512 is 512 in YAML 1.2 but 330 (octal) in YAML 1.1 '
      'readers; write 512, or 0o512 for octal, or quote it: "0512"']),
    ("0644 is ambiguous", {A: OK + "max_tokens: 0644\n"},
     [f'{A}:3:13: error: max_tokens: 0644 is 644 in YAML 1.2 but 420 (octal) in YAML 1.1 '
      'readers; write 644, or 0o644 for octal, or quote it: "0644"']),
    ("0800 is ambiguous", {A: OK + "max_tokens: 0800\n"},
     [f'{A}:3:13: error: max_tokens: 0800 is 800 in YAML 1.2 but text in YAML 1.1 readers; '
      'write 800, or quote it: "0800"']),
    ("02048 is ambiguous", {A: OK + "max_tokens: 02048\n"},
     [f'{A}:3:13: error: max_tokens: 02048 is 2048 in YAML 1.2 but text in YAML 1.1 readers; '
      'write 2048, or quote it: "02048"']),
    ("20:48 is ambiguous", {A: OK + "max_tokens: 20:48\n"},
     [f"{A}:3:13: error: max_tokens: {_amb_number('20:48', '1248')}"]),
    ("1:20 is ambiguous", {A: OK + "max_tokens: 1:20\n"},
     [f"{A}:3:13: error: max_tokens: {_amb_number('1:20', '80')}"]),
    ("1_000 is ambiguous", {A: OK + "max_tokens: 1_000\n"},
     [f"{A}:3:13: error: max_tokens: {_amb_number('1_000', '1000')}"]),
    ("0b101 is ambiguous", {A: OK + "max_tokens: 0b101\n"},
     [f"{A}:3:13: error: max_tokens: {_amb_number('0b101', '5')}"]),
    ("1:30.5 is ambiguous", {A: OK + "temperature: 1:30.5\n"},
     [f"{A}:3:14: error: temperature: {_amb_number('1:30.5', '90.5')}"]),
    ("yes in a typed list is ambiguous", {A: OK + "tools: [search, yes]\n"},
     [f"{A}:3:17: error: tools[1]: {_amb_bool('yes', 'true')}"]),
    ("Off in free text is a warning", {A: OK + "metadata:\n  labels: {mode: Off}\n"},
     [f"{A}:4:18: warning: metadata.labels.mode: {_amb_bool('Off', 'false')}"]),
    ("1:30 in a description is a warning", {A: OK + "metadata:\n  description: 1:30\n"},
     [f"{A}:4:16: warning: metadata.description: {_amb_number('1:30', '90')}"]),
    ("10:30 in a description is a warning", {A: OK + "metadata:\n  description: 10:30\n"},
     [f"{A}:4:16: warning: metadata.description: {_amb_number('10:30', '630')}"]),
    ("NO in a description is a warning", {A: OK + "metadata:\n  description: NO\n"},
     [f"{A}:4:16: warning: metadata.description: {_amb_bool('NO', 'false')}"]),
    ("quoted, nothing is ambiguous",
     {A: OK + "metadata:\n  description: '1:30'\n  labels: {a: 'yes', b: \"0644\"}\n"}, []),
    ("a number where text is wanted says what was written", {
        A: OK + "metadata:\n  owner: 1.10\n"},
     [f'{A}:4:10: error: metadata.owner: must be a string (got 1.10, which YAML reads as a '
      'number; quote it: "1.10")']),
    ("a boolean where text is wanted", {A: OK + "metadata:\n  owner: TRUE\n"},
     [f'{A}:4:10: error: metadata.owner: must be a string (got TRUE, which YAML reads as a '
      'boolean; quote it: "TRUE")']),
    ("a bound quotes the number as written", {A: OK + "temperature: 3.50\n"},
     [f"{A}:3:14: error: temperature: must be at most 2 (got 3.50)"]),
    ("keys keep their text", {A: OK + "metadata:\n  labels: {on: x, 0644: z}\n"}, []),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rules(tmp_path: Path, files: dict[str, str | bytes], expected: list[str]) -> None:
    assert check(tmp_path, files) == expected


@pytest.mark.parametrize(("settings_text", "expected"), [
    ("namespace: 'a b'\n",
     ["configsync.yaml:1:12: error: namespace: must match ^[A-Za-z0-9][A-Za-z0-9._-]*$ "
      "(got 'a b')"]),
    ("namespace: x\nmodels: gpt-4o\n",
     ["configsync.yaml:2:9: error: models: must be a list (got 'gpt-4o')"]),
    ("tools: {search: {descripton: x}}\n",
     ["configsync.yaml:1:18: error: tools.search.descripton: unknown key, did you mean "
      "`description`?"]),
    ("limits: {max_file_bytes: 0}\n",
     ["configsync.yaml:1:26: error: limits.max_file_bytes: must be at least 1 (got 0)"]),
    ("allow_mass_delete: maybe\n",
     ["configsync.yaml:1:20: error: allow_mass_delete: must be true or false (got 'maybe')"]),
    ("allow_mass_delete: yes\n",
     [f"configsync.yaml:1:20: error: allow_mass_delete: {_amb_bool('yes', 'true')}"]),
    ("tools: {search: {description: on}}\n",
     [f"configsync.yaml:1:31: warning: tools.search.description: {_amb_bool('on', 'true')}"]),
    ("schema: not a ref\n",
     ["configsync.yaml:1:9: error: schema: must match ^[A-Za-z_][\\w.]*:[A-Za-z_]\\w*$ "
      "(got 'not a ref')"]),
    ("tools: [search, calculator]\n",
     ["configsync.yaml:1:8: error: tools: must be a mapping (got a list); write one key for each "
      "tool: `tools: {search: {}, calculator: {}}` (each may have a `description:`)"]),
    ("tools: search\n",
     ["configsync.yaml:1:8: error: tools: must be a mapping (got 'search'); for example "
      "`tools: {search: {description: Web search}}`, one key for each tool"]),
    ("limits: 1024\n",
     ["configsync.yaml:1:9: error: limits: must be a mapping (got 1024); for example "
      "`limits: {max_file_bytes: 262144}`"]),
    ("nmespace: x\n",
     ["configsync.yaml:1:1: error: nmespace: unknown key, did you mean `namespace`?"]),
    ("- a\n", ["configsync.yaml:1:1: error: top level must be a mapping of keys to values "
               "(got a list)"]),
    # issue 17: the name marks configsync dev's namespaces
    # (an error, not a warning: a daemon that applied it stopped at every restart)
    ("namespace: support-Dev\ntools: {search: {}}\n",
     ["configsync.yaml:1:12: error: namespace: `support-Dev` ends in -dev, which marks a "
      "configsync dev namespace: a sync daemon never writes one (name the production namespace; "
      "configsync dev adds -dev itself)"]),
])
def test_settings_rules(tmp_path: Path, settings_text: str, expected: list[str]) -> None:
    assert check(tmp_path, {"configsync.yaml": settings_text}) == expected


def test_missing_settings_names_the_file(tmp_path: Path) -> None:
    assert check(tmp_path, {"agents/support.yaml": SUPPORT}, base=False) == [
        "configsync.yaml:1:1: error: no configsync.yaml at the repository root; create it "
        "(`namespace: default` is enough to start)"]


def test_no_model_allow_list_accepts_any_model(tmp_path: Path) -> None:
    assert check(tmp_path, {"configsync.yaml": "namespace: x\ntools: {search: {}}\n",
                            A: "system_prompt: hi\nmodel: my-own-model\n"}) == []


def test_no_tool_registry_means_no_tools(tmp_path: Path) -> None:
    assert check(tmp_path, {"configsync.yaml": "namespace: x\n",
                            A: "system_prompt: hi\nmodel: m\ntools: [search]\n"},
                 base=False) == [
        f"{A}:3:9: error: tools[0]: `search` is not in the tool registry (configsync.yaml has "
        "no `tools:` registry)"]


def test_symlinks_are_errors_and_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "outside.yaml"
    secret.write_text(OK)
    root = tmp_path / "repo"
    write_tree(root, {"configsync.yaml": SETTINGS, "agents/support.yaml": SUPPORT,
                      "agents/a.yaml": "system_prompt_file: prompts/p.md\nmodel: gpt-4o\n"})
    (root / "agents" / "link.yaml").symlink_to(secret)
    (root / "prompts").mkdir()
    (root / "prompts" / "p.md").symlink_to(secret)
    report = check_tree(FolderSource(root), repo_root=root)
    assert [f"{d.path}:{d.line}:{d.column}: {d.message}" for d in report.diagnostics] == [
        "agents/link.yaml:1:1: is a symlink; configsync never follows symlinks: commit the file "
        "itself",
        "prompts/p.md:1:1: is a symlink; configsync never follows symlinks: commit the file "
        "itself",
    ]
    assert "link" not in report.configs and "a" not in report.configs


def test_symlinked_agents_folder_is_an_error(tmp_path: Path) -> None:
    elsewhere = write_tree(tmp_path / "elsewhere", {"a.yaml": OK})
    root = write_tree(tmp_path / "repo", {"configsync.yaml": SETTINGS})
    (root / "agents").symlink_to(elsewhere, target_is_directory=True)
    report = check_tree(FolderSource(root))
    assert [d.message for d in report.diagnostics] == [
        "is a symlink; configsync never follows symlinks: commit the file itself"]
    assert report.configs == {}


def test_resolved_configs(tmp_path: Path) -> None:
    root = tmp_path
    write_tree(root, {
        "configsync.yaml": SETTINGS,
        "agents/base.yaml": "system_prompt_file: prompts/base.md\nmodel: gpt-4o\n"
                            "tools: [search]\nmetadata: {owner: team, labels: {a: '1'}}\n",
        "agents/team/child.yaml": "extends: base\ntemperature: 1.5\n"
                                  "metadata: {labels: {b: '2'}}\n",
        "prompts/base.md": "You are the base.\n",
    })
    report = check_tree(FolderSource(root))
    assert report.diagnostics == []
    assert report.configs["team/child"] == {
        "system_prompt": "You are the base.\n", "model": "gpt-4o", "temperature": 1.5,
        "max_tokens": 1024, "tools": ["search"], "guardrail_threshold": 0.5,
        "metadata": {"owner": "team", "description": None, "labels": {"a": "1", "b": "2"}},
    }
    assert report.configs["base"]["temperature"] == 0.7
    assert sorted(report.configs) == ["base", "team/child"]


def test_only_valid_agents_get_configs(tmp_path: Path) -> None:
    write_tree(tmp_path, {"configsync.yaml": SETTINGS, "agents/good.yaml": OK,
                          "agents/bad.yaml": OK + "temperature: 9\n"})
    report = check_tree(FolderSource(tmp_path))
    assert list(report.configs) == ["good"]
    assert len(report.errors) == 1 and report.warnings == []


def test_parallel_and_serial_agree(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {"configsync.yaml": SETTINGS}
    for i in range(2500):
        files[f"agents/g{i % 7}/a{i}.yaml"] = OK if i % 500 else "model: [\n"
    write_tree(tmp_path, files)
    serial = check_tree(FolderSource(tmp_path), jobs=1)
    parallel = check_tree(FolderSource(tmp_path), jobs=2)
    assert serial.diagnostics == parallel.diagnostics
    assert len(serial.diagnostics) == 5
    assert serial.configs == parallel.configs and len(serial.configs) == 2495


_keys = st.sampled_from(["system_prompt", "system_prompt_file", "model", "temperature",
                         "max_tokens", "tools", "guardrail_threshold", "extends", "metadata",
                         "owner", "labels", "x"])
_leaf = (st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(-3, 3)
         | st.sampled_from(["gpt-4o", "search", "prompts/p.md", "a", "", "b/c"]))
_value = st.recursive(_leaf, lambda c: st.lists(c, max_size=3)
                      | st.dictionaries(_keys, c, max_size=3), max_leaves=10)


@pytest.mark.slow
@settings(max_examples=80, deadline=5000,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["a", "b", "c/d"]),
                       st.dictionaries(_keys, _value, max_size=6), min_size=1))
def test_random_agent_trees_never_crash(tmp_path_factory: pytest.TempPathFactory,
                                        agents: dict[str, dict[str, object]]) -> None:
    import yaml

    root = tmp_path_factory.mktemp("fuzz")
    files: dict[str, str | bytes] = {"configsync.yaml": SETTINGS, "prompts/p.md": "P\n"}
    for agent_id, data in agents.items():
        files[f"agents/{agent_id}.yaml"] = yaml.safe_dump(data) if data else "{}\n"
    write_tree(root, files)
    report = check_tree(FolderSource(root))
    for d in report.diagnostics:
        assert d.line >= 1 and d.column >= 1 and d.message
    assert set(report.configs) <= set(agents)


def test_extends_chains_are_capped_and_cost_stays_linear(tmp_path: Path) -> None:
    """N two-line files, each extending the one before: resolution used to cost N² merges
    (over a minute at 3,000 files; bench/sync.py times that). At most MAX_EXTENDS bases; each
    base merged once."""
    from configsync.validate import MAX_EXTENDS

    files: dict[str, str | bytes] = {"agents/c0.yaml": "system_prompt: base\nmodel: gpt-4o\n"}
    for i in range(1, 1000):
        files[f"agents/c{i}.yaml"] = f"extends: c{i - 1}\ntemperature: 0.{i % 9}\n"
    found = check(tmp_path / "r", files)
    deep = [line for line in found if "more than" in line]
    assert len(deep) == 1000 - (MAX_EXTENDS + 1) and len(found) == len(deep)
    assert (f"agents/c{MAX_EXTENDS + 1}.yaml:1:10: error: extends: more than {MAX_EXTENDS} bases "
            f"(c{MAX_EXTENDS + 1} → c{MAX_EXTENDS} → c{MAX_EXTENDS - 1} → … → c1 → c0); make the "
            "chain shorter") in found
    report = check_tree(FolderSource(tmp_path / "r"), repo_root=tmp_path / "r")
    assert f"c{MAX_EXTENDS}" in report.configs and f"c{MAX_EXTENDS + 1}" not in report.configs
    assert report.configs[f"c{MAX_EXTENDS}"]["system_prompt"] == "base"


@pytest.mark.slow  # a stress or scale test: in .ci/run, not the quick subset
def test_hints_stay_cheap_with_thousands_of_names(tmp_path: Path) -> None:
    """Every missing base asks for a "did you mean" among thousands of agents, and every
    unknown tool lists the registry: both stay short and cheap."""
    tools = "".join(f"  t{i}: {{description: x}}\n" for i in range(2000))
    files: dict[str, str | bytes] = {"configsync.yaml": "namespace: ns\ntools:\n" + tools}
    for i in range(2000):
        files[f"agents/a{i}.yaml"] = f"extends: b{i}\nsystem_prompt: x\nmodel: m\n"
    files["agents/z.yaml"] = "system_prompt: x\nmodel: m\ntools: [nope]\n"
    found = check(tmp_path / "r", files, base=False)
    assert len(found) == 2001
    (tool,) = [line for line in found if line.startswith("agents/z.yaml")]
    assert tool.endswith("`nope` is not in the tool registry (known: t0, t1, t10, t100, t1000, "
                         "t1001, t1002, t1003, t1004, t1005, t1006, t1007, t1008, t1009, t101, "
                         "t1010, t1011, t1012, t1013, t1014 and 1980 more)")


@pytest.mark.parametrize(("raw", "served"), [
    (b"\xef\xbb\xbfYou help.\r\nBe brief.\r\n", "You help.\nBe brief.\n"),
    (b"Old Mac.\rLine two.", "Old Mac.\nLine two."),
    (b"Plain.\n", "Plain.\n"),
])
def test_prompt_files_are_served_with_newlines_as_inline_prompts_are(
        tmp_path: Path, raw: bytes, served: str) -> None:
    """A prompt file's text is served as YAML serves an inline prompt: \\n line breaks, and no
    byte-order mark (so a CRLF checkout and the daemon's git blob serve the same text)."""
    write_tree(tmp_path, {"configsync.yaml": SETTINGS, "prompts/a.md": raw,
                          A: "system_prompt_file: prompts/a.md\nmodel: gpt-4o\n",
                          "agents/b.yaml": "system_prompt: |\r\n  You help.\r\n  Be brief.\r\n"
                                           "model: gpt-4o\r\n"})
    report = check_tree(FolderSource(tmp_path), repo_root=tmp_path)
    assert report.diagnostics == []
    assert report.configs["a"]["system_prompt"] == served
    assert report.configs["b"]["system_prompt"] == "You help.\nBe brief.\n"


@pytest.mark.parametrize("char", ["\n", "\x1b", "\r", "\t", "\x7f", "\x85", "\u2028", "\u202e",
                                  "\u2066", "\u200f", "\u061c", "\u200b", "\ufeff"])
def test_a_prompt_file_name_with_a_control_or_format_character_is_refused(
        tmp_path: Path, char: str) -> None:
    """Issue 17: such a name would print as two lines, colour a terminal or reorder an audit
    line wherever it is shown; it is refused where it is written (and escaped everywhere)."""
    name = f"prompts/a{char}b.md"
    quoted = json.dumps(name)  # (JSON escapes are YAML double-quoted escapes)
    assert check(tmp_path, {name: "Be kind.", A: f"system_prompt_file: {quoted}\nmodel: gpt-4o\n"}
                 ) == [f"{A}:1:21: error: system_prompt_file: must not hold a control, "
                       f"line-breaking or invisible format character (got '{name}')"]
