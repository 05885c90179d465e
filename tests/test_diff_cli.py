"""``configsync diff`` end to end: real git repositories in temp folders, expected output
written out by hand for each format."""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from configsync.cli import main
from configsync.diff_cli import (
    prompt_diff,
)
from configsync.embedded import RedisServer

from .conftest import SETTINGS, GitTree, Remote, git, write_tree

BASE_FILES = {
    "configsync.yaml": SETTINGS,
    "agents/support.yaml": "system_prompt: You help customers.\nmodel: gpt-4o\n"
                           "temperature: 0.3\ntools: [search]\n",
    "agents/legacy.yaml": "system_prompt: Old agent.\nmodel: gpt-4o-mini\n",
    "agents/billing/base.yaml": "system_prompt: You handle billing.\nmodel: gpt-4o\n"
                                "max_tokens: 500\n",
    "agents/billing/refunds.yaml": "extends: billing/base\nmetadata: {owner: billing}\n",
    "agents/research.yaml": "system_prompt_file: prompts/research.md\nmodel: gpt-4o\n",
    "prompts/research.md": "Find sources.\nCite them.\n",
    "agents/triage.yaml": "system_prompt: Route tickets.\nmodel: gpt-4o-mini\n",
}

HEAD_FILES = {
    "agents/support.yaml": "system_prompt: You help customers.\nmodel: gpt-4o\n"
                           "temperature: 0.5\ntools: [search, calculator]\n",
    "agents/billing/base.yaml": "system_prompt: You handle billing.\nmodel: gpt-4o\n"
                                "max_tokens: 800\n",
    "prompts/research.md": "Find sources.\nCite them all.\n",
    "agents/new.yaml": "system_prompt: You are new.\nmodel: gpt-4o-mini\n",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def short(repo: Path, ref: str = "HEAD") -> str:
    return git(repo, "rev-parse", ref).strip()[:12]


@pytest.fixture
def changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitTree:
    """Two commits: BASE_FILES, then HEAD_FILES with agents/legacy.yaml deleted."""
    repo = GitTree(tmp_path / "repo")
    repo.write(BASE_FILES)
    repo.commit("base")
    repo.write(HEAD_FILES)
    (repo.root / "agents/legacy.yaml").unlink()
    repo.commit("head")
    monkeypatch.chdir(repo.root)
    return repo


def test_text(changed: GitTree, capsys: pytest.CaptureFixture[str]) -> None:
    base, head = short(changed.root, "HEAD~1"), short(changed.root)
    assert run(capsys, "diff", "HEAD~1", "HEAD") == (0, f"""\
configsync diff: base {base} (HEAD~1, given) -> head {head} (HEAD, given)
6 agents differ (1 added, 1 removed, 4 changed, 0 invalid); 1 unchanged
changed billing/base: own file agents/billing/base.yaml
  ~ max_tokens: 500 -> 800
changed billing/refunds: changed only through base billing/base
  ~ max_tokens: 500 -> 800
removed legacy: file deleted
added new: new file
changed research: changed only through prompt prompts/research.md
  system_prompt:
    --- research (base)
    +++ research (head)
    @@ -1,2 +1,2 @@
     Find sources.
    -Cite them.
    +Cite them all.
changed support: own file agents/support.yaml
  ~ temperature: 0.3 -> 0.5
  ~ tools: ["search"] -> ["search", "calculator"]
""", "")


def test_json(changed: GitTree, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--format", "json")
    base_sha = git(changed.root, "rev-parse", "HEAD~1").strip()
    head_sha = git(changed.root, "rev-parse", "HEAD").strip()

    def agent(agent_id: str, change: str, causes: list[tuple[str, str]],
              fields: Sequence[tuple[str, str, object, object]] = (),
              prompt_diff: str | None = None) -> dict[str, object]:
        return {"agent_id": agent_id, "change": change, "invalid_on": [],
                "causes": [{"kind": k, "path": p} for k, p in causes],
                "fields": [{"path": p, "kind": k, "old": o, "new": n} for p, k, o, n in fields],
                "prompt_diff": prompt_diff, "same_as": None}

    assert code == 0
    assert json.loads(out) == {
        "base": {"ref": "HEAD~1", "sha": base_sha, "short": base_sha[:12],
                 "how": "HEAD~1, given"},
        "head": {"ref": "HEAD", "sha": head_sha, "short": head_sha[:12], "how": "HEAD, given"},
        "agents": [
            agent("billing/base", "changed", [("own", "agents/billing/base.yaml")],
                  [("max_tokens", "changed", 500, 800)]),
            agent("billing/refunds", "changed", [("base", "agents/billing/base.yaml")],
                  [("max_tokens", "changed", 500, 800)]),
            agent("legacy", "removed", [("own", "agents/legacy.yaml")]),
            agent("new", "added", [("own", "agents/new.yaml")]),
            agent("research", "changed", [("prompt", "prompts/research.md")], [],
                  "--- research (base)\n+++ research (head)\n@@ -1,2 +1,2 @@\n"
                  " Find sources.\n-Cite them.\n+Cite them all.\n"),
            agent("support", "changed", [("own", "agents/support.yaml")],
                  [("temperature", "changed", 0.3, 0.5),
                   ("tools", "changed", ["search"], ["search", "calculator"])]),
        ],
        "unchanged": 1,
        "errors": {"base": [], "head": []},
    }


def test_markdown(changed: GitTree, capsys: pytest.CaptureFixture[str]) -> None:
    base, head = short(changed.root, "HEAD~1"), short(changed.root)
    assert run(capsys, "diff", "HEAD~1", "HEAD", "--format", "markdown") == (0, f"""\
## configsync diff

Base {base} (HEAD\\~1, given) → head {head} (HEAD, given)

**6 agents differ (1 added, 1 removed, 4 changed, 0 invalid); 1 unchanged**

| agent | change | why |
| --- | --- | --- |
| billing/base | changed | own file agents/billing/base.yaml |
| billing/refunds | changed | changed only through base billing/base |
| legacy | removed | file deleted |
| new | added | new file |
| research | changed | changed only through prompt prompts/research.md |
| support | changed | own file agents/support.yaml |

### billing/base (changed)

own file agents/billing/base.yaml

| field | before | after |
| --- | --- | --- |
| max\\_tokens | 500 | 800 |

### billing/refunds (changed)

changed only through base billing/base

| field | before | after |
| --- | --- | --- |
| max\\_tokens | 500 | 800 |

### research (changed)

changed only through prompt prompts/research.md

```diff
--- research (base)
+++ research (head)
@@ -1,2 +1,2 @@
 Find sources.
-Cite them.
+Cite them all.
```

### support (changed)

own file agents/support.yaml

| field | before | after |
| --- | --- | --- |
| temperature | 0.3 | 0.5 |
| tools | \\["search"\\] | \\["search", "calculator"\\] |
""", "")


def test_the_working_tree_is_the_default_head(changed: GitTree,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(changed.root, {"agents/triage.yaml": "system_prompt: Route tickets.\n"
                                                    "model: gpt-4o\n"})
    assert run(capsys, "diff", "HEAD") == (0, f"""\
configsync diff: base {short(changed.root)} (HEAD, given) -> head working tree
1 agent differs (0 added, 0 removed, 1 changed, 0 invalid); 5 unchanged
changed triage: own file agents/triage.yaml
  ~ model: "gpt-4o-mini" -> "gpt-4o"
""", "")


def test_no_change_and_base_equal_to_head(changed: GitTree,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    sha = short(changed.root)
    assert run(capsys, "diff", "HEAD", "HEAD") == (0, f"""\
configsync diff: base {sha} (HEAD, given) -> head {sha} (HEAD, given)
no agent differs; 6 unchanged
""", "")


def test_invalid_at_head_is_not_removed_and_exits_1(
        changed: GitTree, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(changed.root, {
        "agents/triage.yaml": "system_prompt: Route tickets.\nmodel: gpt-4o-mini\n"
                              "temperature: 3.5\n",
        "agents/billing/base.yaml": "system_prompt: You handle billing.\nmodel: gpt-4o\n"
                                    "max_tokens: 0\n",
    })
    code, out, err = run(capsys, "diff", "HEAD")
    assert (code, err) == (1, "")
    assert out == f"""\
configsync diff: base {short(changed.root)} (HEAD, given) -> head working tree
3 agents differ (0 added, 0 removed, 0 changed, 3 invalid); 3 unchanged
invalid billing/base: fails validation at head
invalid billing/refunds: fails validation at head; changed only through base billing/base
invalid triage: fails validation at head
2 errors at head (head working tree):
  agents/billing/base.yaml:3:13: max_tokens: must be at least 1 (got 0)
  agents/triage.yaml:3:14: temperature: must be at most 2 (got 3.5)
"""
    code, out, _ = run(capsys, "diff", "HEAD", "--format", "json")
    data = json.loads(out)
    assert code == 1
    assert [(a["agent_id"], a["change"], a["invalid_on"], a["causes"]) for a in data["agents"]] \
        == [("billing/base", "invalid", ["head"],
             [{"kind": "own", "path": "agents/billing/base.yaml"}]),
            ("billing/refunds", "invalid", ["head"],
             [{"kind": "base", "path": "agents/billing/base.yaml"}]),
            ("triage", "invalid", ["head"], [{"kind": "own", "path": "agents/triage.yaml"}])]
    assert data["errors"]["head"][1] == {
        "path": "agents/triage.yaml", "line": 3, "column": 14, "severity": "error",
        "message": "temperature: must be at most 2 (got 3.5)"}
    code, out, _ = run(capsys, "diff", "HEAD", "--format", "markdown")
    assert code == 1
    assert out.endswith("""\
| triage | invalid | fails validation at head |

**2 errors at head**:

```text
agents/billing/base.yaml:3:13: max_tokens: must be at least 1 (got 0)
agents/triage.yaml:3:14: temperature: must be at most 2 (got 3.5)
```
""")


def test_an_agent_fixed_at_head_was_invalid_at_base(
        changed: GitTree, capsys: pytest.CaptureFixture[str]) -> None:
    changed.write({"agents/triage.yaml": "system_prompt: x\nmodel: nope\n"})
    changed.commit("break triage")
    changed.write({"agents/triage.yaml": BASE_FILES["agents/triage.yaml"]})
    code, out, _ = run(capsys, "diff", "HEAD")
    assert code == 1
    assert out.splitlines()[2:4] == ["invalid triage: fails validation at base, valid at head",
                                     "1 error at base (base "
                                     f"{short(changed.root)} (HEAD, given)):"]


def test_a_renamed_agent_is_removed_and_added_with_a_hint(
        changed: GitTree, capsys: pytest.CaptureFixture[str]) -> None:
    git(changed.root, "mv", "agents/triage.yaml", "agents/routing.yaml")
    code, out, _ = run(capsys, "diff", "HEAD")
    assert (code, out.splitlines()[1:]) == (0, [
        "2 agents differ (1 added, 1 removed, 0 changed, 0 invalid); 5 unchanged",
        "added routing: new file, the same config as triage (renamed?)",
        "removed triage: file deleted, the same config as routing (renamed?)"])
    code, out, _ = run(capsys, "diff", "HEAD", "--format", "json")
    assert [(a["agent_id"], a["same_as"]) for a in json.loads(out)["agents"]] == [
        ("routing", "triage"), ("triage", "routing")]


def test_a_change_that_adds_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    repo = GitTree(tmp_path / "mono")
    repo.write({"README": "a service\n"})
    repo.commit("before configsync")
    repo.write({"configs/configsync.yaml": SETTINGS,
                "configs/agents/triage.yaml": BASE_FILES["agents/triage.yaml"]})
    monkeypatch.chdir(repo.root / "configs")
    code, out, _ = run(capsys, "diff", "HEAD")
    assert (code, out.splitlines()[1:]) == (0, [
        "1 agent differs (1 added, 0 removed, 0 changed, 0 invalid); 0 unchanged",
        "added triage: new file"])


@pytest.fixture
def cloned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitTree:
    """A clone of a bare "origin" whose main holds BASE_FILES, on a branch `feature` that
    changed agents/support.yaml; origin's main moved on after the branch began (it changed
    agents/triage.yaml), so only a merge-base shows the branch's own change."""
    upstream = GitTree(tmp_path / "upstream")
    upstream.write(BASE_FILES)
    upstream.commit("base")
    git(tmp_path, "clone", "-q", "--bare", str(upstream.root), "origin.git")
    git(tmp_path, "clone", "-q", "origin.git", "clone")
    clone = GitTree.__new__(GitTree)
    clone.root = tmp_path / "clone"
    git(clone.root, "checkout", "-q", "-b", "feature")
    clone.write({"agents/support.yaml": HEAD_FILES["agents/support.yaml"]})
    clone.commit("feature")
    upstream.write({"agents/triage.yaml": "system_prompt: Route.\nmodel: gpt-4o-mini\n"})
    upstream.commit("main moves on")
    git(upstream.root, "push", "-q", str(tmp_path / "origin.git"), "main")
    git(clone.root, "fetch", "-q", "origin")
    monkeypatch.chdir(clone.root)
    return clone


def first_line(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    code, out, err = run(capsys, "diff", *argv)
    assert (code, err) == (0, "")
    return out.splitlines()[:3]


def test_default_base_is_the_merge_base_with_origin_head(
        cloned: GitTree, capsys: pytest.CaptureFixture[str]) -> None:
    base = short(cloned.root, "HEAD~1")
    assert first_line(capsys) == [
        f"configsync diff: base {base} (merge-base of HEAD and origin/main, via origin/HEAD) "
        "-> head working tree",
        "1 agent differs (0 added, 0 removed, 1 changed, 0 invalid); 5 unchanged",
        "changed support: own file agents/support.yaml"]


def test_default_base_without_origin_head(cloned: GitTree,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    base = short(cloned.root, "HEAD~1")
    git(cloned.root, "remote", "set-head", "origin", "--delete")
    assert first_line(capsys)[0] == (f"configsync diff: base {base} (merge-base of HEAD and "
                                     "origin/main) -> head working tree")
    git(cloned.root, "branch", "-q", "--set-upstream-to", "origin/main")
    assert first_line(capsys)[0] == (f"configsync diff: base {base} (merge-base of HEAD and "
                                     "origin/main, the upstream of feature) -> head working tree")
    git(cloned.root, "checkout", "-q", "--detach")  # no branch, so no upstream
    git(cloned.root, "remote", "remove", "origin")
    assert first_line(capsys)[:2] == [
        f"configsync diff: base {short(cloned.root)} (HEAD: no origin/HEAD, upstream, "
        "origin/main or origin/master to compare with) -> head working tree",
        "no agent differs; 6 unchanged"]


def test_config_root_in_a_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    repo = GitTree(tmp_path / "mono")
    repo.write({f"configs/{path}": text for path, text in BASE_FILES.items()})
    repo.write({"service/agents/x.yaml": "not: a config\n", "README": "a monorepo\n"})
    repo.commit("base")
    repo.write({"configs/agents/triage.yaml": "system_prompt: Route.\nmodel: gpt-4o\n",
                "service/agents/x.yaml": "changed: too\n"})
    repo.commit("head")
    monkeypatch.chdir(repo.root / "configs" / "agents" / "billing")
    base, head = short(repo.root, "HEAD~1"), short(repo.root)
    assert run(capsys, "diff", "HEAD~1", "HEAD") == (0, f"""\
configsync diff: base {base} (HEAD~1, given) -> head {head} (HEAD, given)
1 agent differs (0 added, 0 removed, 1 changed, 0 invalid); 5 unchanged
changed triage: own file agents/triage.yaml
  ~ model: "gpt-4o-mini" -> "gpt-4o"
  system_prompt:
    --- triage (base)
    +++ triage (head)
    @@ -1 +1 @@
    -Route tickets.
    +Route.
""", "")


HOSTILE = """\
system_prompt: "a ``` b\\nthe end"
model: gpt-4o
metadata:
  description: "x | y <script>alert(1)</script> & ```` z\\nnext line, and more"
  labels:
    "a|b": "[click](https://example.com) @team #1 *bold*"
"""


def test_markdown_escapes_hostile_values(git_tree: GitTree, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    git_tree.write({"agents/support.yaml": HOSTILE})
    monkeypatch.chdir(git_tree.root)
    code, out, _ = run(capsys, "diff", "HEAD", "--format", "markdown")
    assert code == 0
    assert out.split("### support (changed)\n\n", 1)[1] == r"""own file agents/support.yaml

| field | before | after |
| --- | --- | --- |
| temperature | 0.3 | 0.7 |
| max\_tokens | 500 | 1024 |
| tools | \["search"\] | \[\] |
| guardrail\_threshold | 0.7 | 0.5 |
| metadata.description | null | "x \| y &lt;script&gt;alert(1)&lt;/script&gt; &amp; """ + (
        r"""\`\`\`\` z\\nnext line, and m… |
| metadata.labels.a\|b |   | "\[click\](https://example.com) @&#8203;team #&#8203;1 \*bold\*" |

````diff
--- support (base)
+++ support (head)
@@ -1 +1,2 @@
-You help customers.
+a ``` b
+the end
````
""")


def shorten_a_long_prompt(repo: GitTree, lines: int, capsys: pytest.CaptureFixture[str]
                          ) -> str:
    """Commit an agent whose prompt file has ``lines`` lines, cut it to one line in the working
    tree, and return the markdown of that agent's section."""
    repo.write({"agents/long.yaml": "system_prompt_file: prompts/long.md\nmodel: gpt-4o\n",
                "prompts/long.md": "".join(f"line {i}\n" for i in range(lines))})
    repo.commit("a long prompt")
    repo.write({"prompts/long.md": "short now\n"})
    code, out, _ = run(capsys, "diff", "HEAD", "--format", "markdown")
    assert code == 0
    return out.split("### long (changed)\n\n", 1)[1]


def test_a_long_prompt_diff_folds_into_details(git_tree: GitTree,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(git_tree.root)
    assert shorten_a_long_prompt(git_tree, 20, capsys) == (
        "changed only through prompt prompts/long.md\n\n"
        "<details><summary>system_prompt diff (24 lines)</summary>\n\n"
        "```diff\n--- long (base)\n+++ long (head)\n@@ -1,20 +1 @@\n"
        + "".join(f"-line {i}\n" for i in range(20))
        + "+short now\n```\n\n</details>\n")


def test_markdown_shows_the_first_lines_of_a_very_long_prompt_diff(
        git_tree: GitTree, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(git_tree.root)
    assert shorten_a_long_prompt(git_tree, 500, capsys).endswith(
        "-line 396\n```\n\n(the first 400 of 504 lines; `configsync diff` shows them all)"
        "\n\n</details>\n")
    assert run(capsys, "diff", "HEAD")[1].endswith("    -line 499\n    +short now\n")


@pytest.mark.parametrize(("old", "new", "body"), [
    ("one", "two", "@@ -1 +1 @@\n-one\n+two\n"),  # inline prompts: no newline on either side
    ("x\u2028y\nz", "x\u2028y\nz\n",
     "@@ -1,2 +1,2 @@\n x\u2028y\n-z\n\\ No newline at end of file\n+z\n"),
    ("a\n", "a\r\n", "@@ -1 +1 @@\n-a\n+a\r\n"),
])
def test_prompt_diff_lines(old: str, new: str, body: str) -> None:
    assert prompt_diff("p", old, new) == f"--- p (base)\n+++ p (head)\n{body}"


MODELS = """\
from configsync import AgentConfig


class Agent(AgentConfig):
    framework: str = "langgraph"
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module outside the config repository, as if pip-installed."""
    name = f"acme_diff_{uuid.uuid4().hex[:8]}"
    write_tree(tmp_path / "site", {f"{name}.py": MODELS})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield name
    sys.modules.pop(name, None)


def test_a_change_only_to_configsync_yaml(changed: GitTree, package: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(changed.root, {"configsync.yaml": SETTINGS + f"schema: {package}:Agent\n"})
    code, out, _ = run(capsys, "diff", "HEAD")
    assert code == 0
    assert out.splitlines()[1:5] == [
        "6 agents differ (0 added, 0 removed, 6 changed, 0 invalid); 0 unchanged",
        "changed billing/base: changed only through configsync.yaml",
        '  + framework: "langgraph"',
        "changed billing/refunds: changed only through configsync.yaml"]


@pytest.mark.parametrize(("argv", "message"), [
    (["no-such-ref"], "unknown git ref: no-such-ref (is it fetched, and spelled right?)"),
    (["HEAD", "nope"], "unknown git ref: nope (is it fetched, and spelled right?)"),
    (["--", "-x"], "unknown git ref: -x (is it fetched, and spelled right?)"),
])
def test_unknown_ref_is_a_usage_error(changed: GitTree, capsys: pytest.CaptureFixture[str],
                                      argv: list[str], message: str) -> None:
    assert run(capsys, "diff", *argv) == (2, "", f"configsync: error: {message}\n")


def test_not_a_repository_and_no_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path / "plain", {"configsync.yaml": SETTINGS})
    monkeypatch.chdir(tmp_path / "plain")
    code, out, err = run(capsys, "diff")
    assert (code, out) == (2, "")
    assert err == f"configsync: error: not a git repository: {tmp_path / 'plain'}\n"
    git(tmp_path / "plain", "init", "-q")
    assert run(capsys, "diff") == (2, "", "configsync: error: the repository has no commits "
                                          "yet: there is no base to compare with; commit "
                                          "first\n")
    git(tmp_path / "plain", "add", "-A")
    git(tmp_path / "plain", "commit", "-q", "-m", "first")
    git(tmp_path, "clone", "-q", "--bare", str(tmp_path / "plain"), "bare.git")
    monkeypatch.chdir(tmp_path / "bare.git")
    assert run(capsys, "diff") == (2, "", f"configsync: error: {tmp_path / 'bare.git'} is a "
                                          "bare repository: it has no working tree to "
                                          "compare; give BASE and HEAD\n")
    assert run(capsys, "diff", "HEAD", "HEAD")[0] == 0
    with pytest.raises(SystemExit) as exc:
        main(["diff", "--format", "yaml"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("configsync: error: argument --format: invalid "
                                              "choice: 'yaml'")


def test_agent_versions_as_sides_and_the_agent_filter(
        changed: GitTree, capsys: pytest.CaptureFixture[str]) -> None:
    changed.write({"agents/support.yaml": "system_prompt: You help customers.\nmodel: gpt-4o\n"
                                          "temperature: 0.9\ntools: [search, calculator]\n"})
    changed.commit("warmer support")
    v1, v3 = short(changed.root, "HEAD~2"), short(changed.root)
    # the daemon's numbers (configsync history): v1 "base", v2 "head", v3 "warmer support";
    # both sides one agent's versions: only that agent
    assert run(capsys, "diff", "support@v1", "support@V3") == (0, f"""\
configsync diff: base {v1} (support v1: base) -> head {v3} (support v3: warmer support)
1 agent differs (0 added, 0 removed, 1 changed, 0 invalid); 0 unchanged
changed support: own file agents/support.yaml
  ~ temperature: 0.3 -> 0.9
  ~ tools: ["search"] -> ["search", "calculator"]
""", "")
    code, out, _ = run(capsys, "diff", "support@v2", "--agent", "research", "--agent",
                       "billing/refunds", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["head"]["how"] == "working tree"
    assert [a["agent_id"] for a in data["agents"]] == [] and data["unchanged"] == 2
    code, out, _ = run(capsys, "diff", "HEAD~2", "--agent", "research")
    assert out.splitlines()[1:3] == [
        "1 agent differs (0 added, 0 removed, 1 changed, 0 invalid); 0 unchanged",
        "changed research: changed only through prompt prompts/research.md"]
    assert run(capsys, "diff", "support@v7") == (
        2, "", "configsync: error: support@v7: support has no version 7 (it has versions 1-3; "
               "see `configsync history support`)\n")


def test_markdown_mentions_nobody(changed: GitTree, capsys: pytest.CaptureFixture[str]) -> None:
    """A mention or an issue link in a field name, a value or the commit subject a side names
    (AGENT@vN) reaches the markdown with a zero-width space after its sign."""
    changed.write({"agents/support.yaml": "system_prompt: You help customers.\nmodel: gpt-4o\n"
                                          "metadata: {labels: {\"@admins\": "
                                          "\"cc @org/security #7\"}}\n"})
    changed.commit("ping @octocat about #12")
    code, out, err = run(capsys, "diff", "support@v2", "support@v3", "--format", "markdown")
    assert (code, err) == (0, ""), err
    assert f"→ head {short(changed.root)} (support v3: ping @&#8203;octocat about #&#8203;12)\n" \
        in out
    assert "| metadata.labels.@&#8203;admins |   | \"cc @&#8203;org/security #&#8203;7\" |\n" in out
    assert "@o" not in out and "@a" not in out and "#1" not in out and "#7" not in out


SPOOF = "x\u2028-Never reveal secrets\u0085-y\r-z\x1b[2K\u2029+w"


def test_a_prompt_cannot_print_a_line_of_its_own(
        git_tree: GitTree, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Line breaks other than the diff's own (U+2028, U+2029, U+0085, \\r) and ESC inside a
    prompt are escaped in the text and in the markdown: one added line stays one line."""
    git_tree.write({"agents/support.yaml": "system_prompt: " + json.dumps(SPOOF)
                    + "\nmodel: gpt-4o\n"})
    monkeypatch.chdir(git_tree.root)
    escaped = "+x\\u2028-Never reveal secrets\\u0085-y\\r-z\\u001b[2K\\u2029+w"
    code, out, _ = run(capsys, "diff", "HEAD")
    assert code == 0
    assert out.split("  system_prompt:\n", 1)[1] == (
        "    --- support (base)\n    +++ support (head)\n    @@ -1 +1 @@\n"
        f"    -You help customers.\n    {escaped}\n")
    code, out, _ = run(capsys, "diff", "HEAD", "--format", "markdown")
    assert code == 0
    assert out.endswith("```diff\n--- support (base)\n+++ support (head)\n@@ -1 +1 @@\n"
                        f"-You help customers.\n{escaped}\n```\n")
    code, out, _ = run(capsys, "diff", "HEAD", "--format", "json")
    assert json.loads(out)["agents"][0]["prompt_diff"].endswith(f"+{SPOOF}\n")  # as it is


def test_an_error_message_is_one_line(git_tree: GitTree, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    git_tree.write({"agents/support.yaml": 'system_prompt: hi\nmodel: "gpt\\n- fake\\e[31m"\n'})
    monkeypatch.chdir(git_tree.root)
    error = ("agents/support.yaml:2:8: model: `gpt\\n- fake\\u001b[31m` is not an allowed model "
             "(allowed: gpt-4o, gpt-4o-mini)")
    code, out, _ = run(capsys, "diff", "HEAD")
    assert code == 1 and out.endswith(f"1 error at head (head working tree):\n  {error}\n")
    code, out, _ = run(capsys, "diff", "HEAD", "--format", "markdown")
    assert code == 1 and out.endswith(f"**1 error at head**:\n\n```text\n{error}\n```\n")


def test_the_agent_filter_keeps_every_error_and_the_exit_code(
        changed: GitTree, capsys: pytest.CaptureFixture[str]) -> None:
    """--agent filters the listing, not the verdict: the daemon refuses a commit with an error
    in any agent's file."""
    changed.write({"agents/support.yaml": "system_prompt: x\nmodel: nope\n"})
    changed.commit("break support")
    code, out, err = run(capsys, "diff", "HEAD~1", "HEAD", "--agent", "triage")
    assert (code, err) == (1, "")
    assert out.splitlines()[1:] == [
        "no agent differs; 1 unchanged",
        f"1 error at head (head {short(changed.root)} (HEAD, given)):",
        "  agents/support.yaml:2:8: model: `nope` is not an allowed model (allowed: gpt-4o, "
        "gpt-4o-mini)"]
    code, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--agent", "triage", "--format", "json")
    data = json.loads(out)
    assert code == 1 and data["agents"] == [] and data["unchanged"] == 1
    assert [e["path"] for e in data["errors"]["head"]] == ["agents/support.yaml"]
    code, out, _ = run(capsys, "diff", "HEAD~1", "HEAD", "--agent", "triage", "--format",
                       "markdown")
    assert code == 1 and "**1 error at head**:\n\n```text\nagents/support.yaml:2:8:" in out
    # an agent that only fails validation, or is only on one side, is still an agent
    code, out, _ = run(capsys, "diff", "HEAD~2", "HEAD", "--agent", "support", "--agent",
                       "legacy")
    assert code == 1
    assert out.splitlines()[2:4] == ["removed legacy: file deleted",
                                     "invalid support: fails validation at head"]


@pytest.mark.parametrize(("agent", "message"), [
    ("triag", "--agent triag: no such agent at base or head, did you mean `triage`?"),
    ("nobody-at-all", "--agent nobody-at-all: no such agent at base or head"),
    ("agents/triage.yaml", "--agent agents/triage.yaml: no such agent at base or head"),
])
def test_an_agent_filter_that_names_no_agent_is_a_usage_error(
        changed: GitTree, capsys: pytest.CaptureFixture[str], agent: str, message: str) -> None:
    assert run(capsys, "diff", "HEAD~1", "HEAD", "--agent", "triage", "--agent", agent) == (
        2, "", f"configsync: error: {message}\n")


def closed_fences(markdown: str) -> bool:
    """Whether every code fence the markdown opens is closed (and no table row is cut)."""
    fence = None
    for line in markdown.splitlines():
        if fence is None and (found := re.match(r"(`{3,})", line)):
            fence = found[1]
        elif fence is not None and line == fence:
            fence = None
        elif fence is None and line.startswith("|"):
            assert line.endswith(" |"), line
    return fence is None


def test_markdown_stays_under_what_github_holds(git_tree: GitTree,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The red team's 30 agents with 200 KB one-line prompts gave 12 MB of markdown (a PR
    comment holds 65,536 characters): each line is cut at 1,000 characters, the whole at
    60,000, the table stays complete and a note counts what was left out."""
    files = {f"agents/a{i:02}.yaml": f"system_prompt: old {i}\nmodel: gpt-4o\n" for i in range(30)}
    git_tree.write(files)
    git_tree.commit("thirty agents")
    git_tree.write({name: f"system_prompt: {'x' * 200_000}\nmodel: gpt-4o\n" for name in files})
    many_lines = "".join(f"{i} {'y' * 2000}\\n" for i in range(100))  # 200 KB in 100 lines
    git_tree.write({"agents/a01.yaml": f'system_prompt: "{many_lines}"\nmodel: gpt-4o\n'})
    monkeypatch.chdir(git_tree.root)
    code, out, _ = run(capsys, "diff", "HEAD", "--format", "markdown")
    assert code == 0
    assert len(out) <= 60_000 and closed_fences(out)
    assert all(f"| a{i:02} | changed | own file agents/a{i:02}.yaml |\n" in out for i in range(30))
    assert f"+{'x' * 1000}… (199,000 more characters)\n```\n" in out
    assert "x" * 1001 not in out and f"\n+0 {'y' * 998}… (1,002 more characters)\n" in out
    # a00 fits whole; a01's 100 lines do not: cut between lines, its block closed; no room
    # is left for the others
    assert out.count("### a") == 2 and "### a01 (changed)" in out
    cut = re.search(r"\n```\n\n\(the first (\d+) of 105 lines; `configsync diff` shows them "
                    r"all\)\n\n</details>\n\n\*\*Cut", out)
    assert cut is not None and 10 < int(cut[1]) < 100
    assert out.endswith("**Cut to stay under 60,000 characters: the details of 28 agents are "
                        "left out; those of a01 are cut short. Run `configsync diff` locally to "
                        "see everything.**\n")
    code, out, _ = run(capsys, "diff", "HEAD")  # text and json are complete
    assert out.count("x" * 200_000) == 29 and out.count("y" * 2000) == 100
    code, out, _ = run(capsys, "diff", "HEAD", "--format", "json")
    assert sum("x" * 200_000 in a["prompt_diff"] for a in json.loads(out)["agents"]) == 29


@pytest.mark.slow  # (a rewind is confirmed by a second fetch 2 s later)
def test_redis_numbers_after_a_force_push_the_daemon_followed(
        force_pushed: Remote, redis_server: RedisServer, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(force_pushed.work)
    capsys.readouterr()
    # Redis v2 is the "bad deploy" a force-push dropped: still in this clone, so it is shown
    code, out, err = run(capsys, "diff", "a@v2", "a@v4", "--redis", redis_server.url)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("configsync diff: base ") and \
        "(a v2 in Redis: bad deploy) -> head " in lines[0] and \
        lines[0].endswith("(a v4 in Redis: a: 0.9)")
    assert lines[2:] == ["changed a: own file agents/a.yaml", "  ~ temperature: 1.9 -> 0.9"]
    # by the branch's own numbering there is no v4 (the replay numbers a v1, v2)
    assert run(capsys, "diff", "a@v1", "a@v4")[0] == 2
    code, _, err = run(capsys, "diff", "a@v9", "--redis", redis_server.url)
    assert (code, err) == (2, "configsync: error: a@v9: Redis's last version of a is v4; see "
                           "`configsync history a --redis`\n")


def test_a_version_without_its_v_gets_a_hint(changed: GitTree,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "diff", "support@2") == (
        2, "", "configsync: error: unknown git ref: support@2; for version 2 of support, write "
               "support@v2\n")
