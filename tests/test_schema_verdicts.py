"""One verdict for a single agent file: `configsync validate`, the daemon's path (`validate
--ref` on a commit) and check-jsonschema with the generated schema (what editors and CI hooks
use) accept and refuse the same files (issue 10).

The only cases where they differ are the ones the README lists under the schema's limits: rules
that need other files (``CROSS_FILE``) and what JSON Schema cannot say (``NO_JSON_SCHEMA``).
Each case is a file ``agents/case.yaml`` in a config tree that also holds a valid
``agents/base.yaml`` and ``prompts/main.md``, so ``extends: base`` and ``prompts/main.md``
resolve.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import regress

from configsync.cli import main
from configsync.model import NOT_BLANK

from .conftest import SETTINGS, git, write_tree

PROJECT = Path(__file__).parents[1]
SCHEMA = PROJECT / "schemas" / "agent.schema.json"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

OK, ERROR = "ok", "error"
CROSS_FILE = {"extends", "tool registry", "model allow-list", "prompt file existence"}
NO_JSON_SCHEMA = {"whole float for an integer", "YAML 1.1 ambiguity"}


@dataclass(frozen=True)
class Case:
    id: str
    body: str
    verdict: str  # configsync validate's
    differs: str | None = None  # why check-jsonschema says the opposite (listed in the README)


P = "system_prompt: hi\nmodel: gpt-4o\n"  # a valid start

CASES = [
    Case("minimal", P, OK),
    Case("every-field", "system_prompt_file: prompts/main.md\nmodel: gpt-4o\ntemperature: 1\n"
         "max_tokens: 9007199254740991\ntools: [search, calculator]\nguardrail_threshold: 0\n"
         "metadata: {owner: ada, description: d, labels: {team: core}}\n", OK),
    # the prompt: not blank, exactly one source, a path under prompts/
    Case("blank-prompt", 'system_prompt: "   "\nmodel: gpt-4o\n', ERROR),
    Case("ideographic-space-prompt", 'system_prompt: "\\u3000\\t"\nmodel: gpt-4o\n', ERROR),
    Case("empty-prompt", 'system_prompt: ""\nmodel: gpt-4o\n', ERROR),
    Case("both-prompts", P + "system_prompt_file: prompts/main.md\n", ERROR),
    Case("no-prompt", "model: gpt-4o\n", ERROR),
    Case("null-prompt", "system_prompt: null\nmodel: gpt-4o\n", ERROR),
    Case("null-prompt-and-a-file",
         "system_prompt: null\nsystem_prompt_file: prompts/main.md\nmodel: gpt-4o\n", OK),
    Case("prompt-file-outside", "system_prompt_file: ../etc/passwd\nmodel: gpt-4o\n", ERROR),
    Case("prompt-file-dotdot", "system_prompt_file: prompts/../etc/passwd\nmodel: gpt-4o\n",
         ERROR),
    Case("prompt-file-backslash", "system_prompt_file: 'prompts\\main.md'\nmodel: gpt-4o\n",
         ERROR),
    Case("prompt-file-folder", "system_prompt_file: prompts/\nmodel: gpt-4o\n", ERROR),
    Case("prompt-file-absolute", "system_prompt_file: /prompts/main.md\nmodel: gpt-4o\n", ERROR),
    Case("prompt-file-missing", "system_prompt_file: prompts/gone.md\nmodel: gpt-4o\n", ERROR,
         "prompt file existence"),
    # the model
    Case("no-model", "system_prompt: hi\n", ERROR),
    Case("empty-model", "system_prompt: hi\nmodel: ''\n", ERROR),
    Case("model-not-allowed", "system_prompt: hi\nmodel: claude-9\n", ERROR, "model allow-list"),
    # tools
    Case("duplicate-tool", P + "tools: [search, search]\n", ERROR),
    Case("tools-not-a-list", P + "tools: search\n", ERROR),
    Case("unknown-tool", P + "tools: [browse]\n", ERROR, "tool registry"),
    # numbers: bounds, strict types, and what JSON readers cannot hold
    Case("nan", P + "temperature: .nan\n", ERROR),
    Case("inf", P + "temperature: .inf\n", ERROR),
    Case("minus-inf", P + "guardrail_threshold: -.inf\n", ERROR),
    Case("temperature-too-high", P + "temperature: 2.5\n", ERROR),
    Case("temperature-string", P + "temperature: '0.5'\n", ERROR),
    Case("max-tokens-zero", P + "max_tokens: 0\n", ERROR),
    Case("max-tokens-bool", P + "max_tokens: true\n", ERROR),
    Case("max-tokens-unsafe", P + "max_tokens: 9007199254740992\n", ERROR),
    Case("max-tokens-float", P + "max_tokens: 1024.5\n", ERROR),
    Case("max-tokens-whole-float", P + "max_tokens: 1024.0\n", ERROR,
         "whole float for an integer"),
    # extends: the base may supply model and prompt; a prompt key here drops the inherited one
    Case("extends-only", "extends: base\ntemperature: 0.3\n", OK),
    Case("extends-own-prompt-file", "extends: base\nsystem_prompt_file: prompts/main.md\n", OK),
    Case("extends-blank-prompt", 'extends: base\nsystem_prompt: "  "\n', ERROR),
    Case("extends-null-prompt", "extends: base\nsystem_prompt: null\n", ERROR),
    Case("extends-both-prompts",
         "extends: base\nsystem_prompt: hi\nsystem_prompt_file: prompts/main.md\n", ERROR),
    Case("extends-null", "extends: null\ntemperature: 0.3\n", ERROR),
    Case("extends-null-whole", "extends: null\n" + P, OK),
    Case("extends-list", "extends: [base, other]\n", ERROR),
    Case("extends-not-an-id", "extends: ../base\n", ERROR),
    Case("extends-capitals", "extends: Base\n", ERROR),
    Case("extends-missing", "extends: nobody\n", ERROR, "extends"),
    Case("extends-itself", "extends: case\n", ERROR, "extends"),
    # the file's shape
    Case("unknown-key", P + "temprature: 0.5\n", ERROR),
    Case("label-not-a-string", P + "metadata: {labels: {tier: 1}}\n", ERROR),
    Case("owner-not-a-string", P + "metadata: {owner: [ada]}\n", ERROR),
    Case("top-level-list", "- system_prompt: hi\n", ERROR),
    # YAML 1.2 plain scalars (issue 10.1): the same numbers for every reader; what YAML 1.1
    # reads otherwise is refused by validate in a typed field, which JSON Schema cannot see
    Case("yaml12-exponent", P + "temperature: 1e0\n", OK),
    Case("yaml12-leading-dot", P + "temperature: .5\nguardrail_threshold: +.5\n", OK),
    Case("yaml12-octal", P + "max_tokens: 0o17\n", OK),
    Case("yaml12-hex", P + "max_tokens: 0x400\n", OK),
    Case("yaml11-sexagesimal", P + "max_tokens: 1:20\n", ERROR),
    Case("yaml11-sexagesimal-float", P + "temperature: 1:30.5\n", ERROR),
    Case("yaml11-underscores", P + "max_tokens: 1_000\n", ERROR, "YAML 1.1 ambiguity"),
    Case("yaml11-binary", P + "max_tokens: 0b101\n", ERROR, "YAML 1.1 ambiguity"),
    Case("yaml11-leading-zero", P + "max_tokens: 0644\n", ERROR, "YAML 1.1 ambiguity"),
    Case("yaml11-leading-zero-not-octal", P + "max_tokens: 0800\n", ERROR,
         "YAML 1.1 ambiguity"),
    Case("yaml11-yes-in-a-list", P + "tools: [search, yes]\n", ERROR, "YAML 1.1 ambiguity"),
    Case("yaml11-in-free-text-warns", P + "metadata: {description: 1:30, owner: NO}\n", OK),
    Case("yaml11-quoted", P + "metadata: {labels: {a: 'yes', b: '0644'}}\n", OK),
    Case("number-for-text", P + "metadata: {owner: 1.10}\n", ERROR),
]


# What validate says for each case, exactly (issue 10: every message has its text).
SAID: dict[str, list[str]] = {
    'minimal': [
    ],
    'every-field': [
    ],
    'blank-prompt': [
        'agents/case.yaml:1:16: error: system_prompt: must not be empty',
    ],
    'ideographic-space-prompt': [
        'agents/case.yaml:1:16: error: system_prompt: must not be empty',
    ],
    'empty-prompt': [
        'agents/case.yaml:1:16: error: system_prompt: must not be empty',
    ],
    'both-prompts': [
        'agents/case.yaml:3:21: error: set exactly one of `system_prompt` or `system_prompt_file`',
    ],
    'no-prompt': [
        'agents/case.yaml:1:1: error: set exactly one of `system_prompt` or `system_prompt_file`',
    ],
    'null-prompt': [
        'agents/case.yaml:1:1: error: set exactly one of `system_prompt` or `system_prompt_file`',
    ],
    'null-prompt-and-a-file': [
    ],
    'prompt-file-outside': [
        "agents/case.yaml:1:21: error: system_prompt_file: must be a relative path under prompts/ (got '../etc/passwd')",
    ],
    'prompt-file-dotdot': [
        "agents/case.yaml:1:21: error: system_prompt_file: must be a relative path under prompts/ (got 'prompts/../etc/passwd')",
    ],
    'prompt-file-backslash': [
        "agents/case.yaml:1:21: error: system_prompt_file: must be a relative path under prompts/ (got 'prompts\\main.md')",
    ],
    'prompt-file-folder': [
        "agents/case.yaml:1:21: error: system_prompt_file: must be a relative path under prompts/ (got 'prompts/')",
    ],
    'prompt-file-absolute': [
        "agents/case.yaml:1:21: error: system_prompt_file: must be a relative path under prompts/ (got '/prompts/main.md')",
    ],
    'prompt-file-missing': [
        'agents/case.yaml:1:21: error: system_prompt_file: prompts/gone.md does not exist, did you mean `prompts/main.md`?',
    ],
    'no-model': [
        'agents/case.yaml:1:1: error: model: is required',
    ],
    'empty-model': [
        'agents/case.yaml:2:8: error: model: must not be empty',
    ],
    'model-not-allowed': [
        'agents/case.yaml:2:8: error: model: `claude-9` is not an allowed model (allowed: gpt-4o, gpt-4o-mini)',
    ],
    'duplicate-tool': [
        'agents/case.yaml:3:17: error: tools[1]: `search` is listed twice',
    ],
    'tools-not-a-list': [
        "agents/case.yaml:3:8: error: tools: must be a list (got 'search')",
    ],
    'unknown-tool': [
        'agents/case.yaml:3:9: error: tools[0]: `browse` is not in the tool registry (known: calculator, search)',
    ],
    'nan': [
        'agents/case.yaml:3:14: error: temperature: .nan has no JSON form: JSON readers in other languages cannot represent it; quote it to keep it as text',
    ],
    'inf': [
        'agents/case.yaml:3:14: error: temperature: .inf has no JSON form: JSON readers in other languages cannot represent it; quote it to keep it as text',
    ],
    'minus-inf': [
        'agents/case.yaml:3:22: error: guardrail_threshold: -.inf has no JSON form: JSON readers in other languages cannot represent it; quote it to keep it as text',
    ],
    'temperature-too-high': [
        'agents/case.yaml:3:14: error: temperature: must be at most 2 (got 2.5)',
    ],
    'temperature-string': [
        "agents/case.yaml:3:14: error: temperature: must be a number (got '0.5')",
    ],
    'max-tokens-zero': [
        'agents/case.yaml:3:13: error: max_tokens: must be at least 1 (got 0)',
    ],
    'max-tokens-bool': [
        'agents/case.yaml:3:13: error: max_tokens: must be a whole number (got true)',
    ],
    'max-tokens-unsafe': [
        "agents/case.yaml:3:13: error: max_tokens: 9007199254740992 is outside ±(2^53-1): JSON readers in other languages (JavaScript, Go's float64) cannot represent it exactly; quote it to keep it as text",
    ],
    'max-tokens-float': [
        'agents/case.yaml:3:13: error: max_tokens: must be a whole number (got 1024.5)',
    ],
    'max-tokens-whole-float': [
        'agents/case.yaml:3:13: error: max_tokens: must be a whole number (got 1024.0)',
    ],
    'extends-only': [
    ],
    'extends-own-prompt-file': [
    ],
    'extends-blank-prompt': [
        'agents/case.yaml:2:16: error: system_prompt: must not be empty',
    ],
    'extends-null-prompt': [
        'agents/case.yaml:1:1: error: set exactly one of `system_prompt` or `system_prompt_file`',
    ],
    'extends-both-prompts': [
        'agents/case.yaml:3:21: error: set exactly one of `system_prompt` or `system_prompt_file`',
    ],
    'extends-null': [
        'agents/case.yaml:1:1: error: model: is required',
        'agents/case.yaml:1:1: error: set exactly one of `system_prompt` or `system_prompt_file`',
    ],
    'extends-null-whole': [
    ],
    'extends-list': [
        'agents/case.yaml:1:10: error: extends: must be a string (got a list); an agent extends one base, its id (to build on several, let each base extend the next)',
    ],
    'extends-not-an-id': [
        "agents/case.yaml:1:10: error: extends: must be an agent id, the path of its file under agents/ without .yaml (got '../base')",
    ],
    'extends-capitals': [
        "agents/case.yaml:1:10: error: extends: must be an agent id, the path of its file under agents/ without .yaml (got 'Base')",
    ],
    'extends-missing': [
        'agents/case.yaml:1:10: error: extends: no agent `nobody` (known: base, case)',
    ],
    'extends-itself': [
        'agents/case.yaml:1:10: error: extends: cycle case → case',
    ],
    'unknown-key': [
        'agents/case.yaml:3:1: error: temprature: unknown key, did you mean `temperature`?',
    ],
    'label-not-a-string': [
        'agents/case.yaml:3:27: error: metadata.labels.tier: must be a string (got 1, which YAML reads as a number; quote it: "1")',
    ],
    'owner-not-a-string': [
        'agents/case.yaml:3:19: error: metadata.owner: must be a string (got a list)',
    ],
    'top-level-list': [
        'agents/case.yaml:1:1: error: top level must be a mapping of keys to values (got a list)',
    ],
    'yaml12-exponent': [
    ],
    'yaml12-leading-dot': [
    ],
    'yaml12-octal': [
    ],
    'yaml12-hex': [
    ],
    'yaml11-sexagesimal': [
        'agents/case.yaml:3:13: error: max_tokens: 1:20 is text in YAML 1.2 but the number 80 in YAML 1.1 readers; write 80 for the number, or quote it: "1:20"',
    ],
    'yaml11-sexagesimal-float': [
        'agents/case.yaml:3:14: error: temperature: 1:30.5 is text in YAML 1.2 but the number 90.5 in YAML 1.1 readers; write 90.5 for the number, or quote it: "1:30.5"',
    ],
    'yaml11-underscores': [
        'agents/case.yaml:3:13: error: max_tokens: 1_000 is text in YAML 1.2 but the number 1000 in YAML 1.1 readers; write 1000 for the number, or quote it: "1_000"',
    ],
    'yaml11-binary': [
        'agents/case.yaml:3:13: error: max_tokens: 0b101 is text in YAML 1.2 but the number 5 in YAML 1.1 readers; write 5 for the number, or quote it: "0b101"',
    ],
    'yaml11-leading-zero': [
        'agents/case.yaml:3:13: error: max_tokens: 0644 is 644 in YAML 1.2 but 420 (octal) in YAML 1.1 readers; write 644, or 0o644 for octal, or quote it: "0644"',
    ],
    'yaml11-leading-zero-not-octal': [
        'agents/case.yaml:3:13: error: max_tokens: 0800 is 800 in YAML 1.2 but text in YAML 1.1 readers; write 800, or quote it: "0800"',
    ],
    'yaml11-yes-in-a-list': [
        'agents/case.yaml:3:17: error: tools[1]: yes is the text "yes" in YAML 1.2 (editors, JSON Schema, configsync) but true in YAML 1.1 readers; write true for a boolean, or quote it: "yes"',
    ],
    'yaml11-in-free-text-warns': [
        'agents/case.yaml:3:25: warning: metadata.description: 1:30 is text in YAML 1.2 but the number 90 in YAML 1.1 readers; write 90 for the number, or quote it: "1:30"',
        'agents/case.yaml:3:38: warning: metadata.owner: NO is the text "NO" in YAML 1.2 (editors, JSON Schema, configsync) but false in YAML 1.1 readers; write false for a boolean, or quote it: "NO"',
    ],
    'yaml11-quoted': [
    ],
    'number-for-text': [
        'agents/case.yaml:3:19: error: metadata.owner: must be a string (got 1.10, which YAML reads as a number; quote it: "1.10")',
    ],
}


def schema_verdicts(folder: Path, files: list[Path]) -> dict[str, str]:
    """check-jsonschema's verdict on each file, from one run of its command."""
    proc = subprocess.run([str(CHECK_JSONSCHEMA), "--schemafile", str(SCHEMA), "-o", "json",
                           *map(str, files)], capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    failed = {Path(e["filename"]).name for e in result["errors"] + result["parse_errors"]}
    return {f.name: ERROR if f.name in failed else OK for f in files}


@pytest.fixture(scope="module")
def schema_says(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("schema-cases")
    files = []
    for case in CASES:
        files.append(folder / f"{case.id}.yaml")
        files[-1].write_text(case.body, encoding="utf-8")
    return schema_verdicts(folder, files)


def validate_says(root: Path, body: str, capsys: pytest.CaptureFixture[str],
                  said: list[str]) -> str:
    """``configsync validate`` on the working tree, and on the same tree committed
    (``--ref HEAD``, the daemon's path): one verdict and the same messages from both."""
    write_tree(root, {
        "configsync.yaml": SETTINGS,
        "agents/base.yaml": "system_prompt: You help.\nmodel: gpt-4o\n",
        "prompts/main.md": "You research.\n",
    })
    (root / "agents" / "case.yaml").write_text(body, encoding="utf-8")
    code = main(["validate", str(root)])
    out, _ = capsys.readouterr()
    assert code in (0, 1), out
    assert (code == 0) == (" error: " not in out), out
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "case")
    committed = main(["validate", "--ref", "HEAD", str(root)])
    out_ref, _ = capsys.readouterr()
    assert committed == code
    assert _relative(out_ref, root) == _relative(out, root)
    said.extend(_relative(out, root))
    return OK if code == 0 else ERROR


def _relative(output: str, root: Path) -> list[str]:
    return sorted(line.replace(f"{root}/", "") for line in output.splitlines())


@pytest.mark.slow  # three verdicts and a git commit per case: in .ci/run, not the quick subset
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_validate_and_the_schema_agree(case: Case, schema_says: dict[str, str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    said: list[str] = []
    assert validate_says(tmp_path / "repo", case.body, capsys, said) == case.verdict
    assert said == SAID[case.id]
    if case.differs is None:
        assert schema_says[f"{case.id}.yaml"] == case.verdict
    else:
        assert case.differs in CROSS_FILE | NO_JSON_SCHEMA
        assert (case.verdict, schema_says[f"{case.id}.yaml"]) == (ERROR, OK)


def test_the_table_covers_every_documented_difference() -> None:
    assert {c.differs for c in CASES} - {None} == CROSS_FILE | NO_JSON_SCHEMA
    assert len(CASES) >= 20


def test_the_readme_lists_the_schema_limits() -> None:
    readme = (PROJECT / "README.md").read_text("utf-8")
    limits = readme[readme.index("### What the schema cannot check"):]
    limits = limits[:limits.index("\n## ")]
    for needle in ("`extends`", "tool registry", "allow-list", "prompt file", "`1024.0`"):
        assert needle in limits


def test_not_blank_is_the_same_in_python_and_ecmascript() -> None:
    """The blank-prompt rule, character by character: the validator (Python ``re``), the
    schema's ``pattern`` in ECMAScript (regress, what check-jsonschema and editors use), and
    ``str.isspace`` plus the byte-order mark and zero-width spaces (issue 10.4)."""
    ecma = regress.Regex(NOT_BLANK, "u")
    for code in range(0x10000):  # every whitespace character either knows is in this plane
        if 0xD800 <= code < 0xE000:
            continue  # surrogates are no text
        char = chr(code)
        blank = char.isspace() or char in "\u200b\u200c\u200d\u2060\ufeff"  # (invisible)
        assert (re.search(NOT_BLANK, char) is None) == blank, hex(code)
        assert (ecma.find(char) is None) == blank, hex(code)


def test_the_schema_declares_its_draft() -> None:
    for name in ("agent.schema.json", "configsync.schema.json"):
        schema = json.loads((PROJECT / "schemas" / name).read_text("utf-8"))
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
