"""The command line, end to end: working trees, commits in real git repos, formats, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configsync import cli
from configsync.cli import main

from .conftest import SETTINGS, SUPPORT, GitTree, git, write_tree

BAD = "system_prompt: hi\nmodel: gpt-4o\ntemperature: 3.5\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_clean_tree(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "validate", str(tree)) == (
        0, "", "configsync: 1 agent OK (2 files checked)\n")


def test_errors_in_text_format(tree: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tree, {"agents/support.yaml": BAD})
    monkeypatch.chdir(tree)
    code, out, err = run(capsys, "validate")
    assert code == 1
    assert out == "agents/support.yaml:3:14: error: temperature: must be at most 2 (got 3.5)\n"
    assert err == "configsync: 1 error, 0 warnings (2 files checked)\n"


def test_paths_are_shown_as_given(tree: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tree, {"agents/support.yaml": BAD})
    monkeypatch.chdir(tree.parent)
    code, out, _ = run(capsys, "validate", "repo/")
    assert code == 1
    assert out.startswith("repo/agents/support.yaml:3:14: error:")


def test_json_format(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tree, {"agents/support.yaml": BAD, "agents/b.yaml": "- x\n"})
    code, out, _ = run(capsys, "validate", str(tree), "--format", "json")
    assert code == 1
    base = str(tree).replace(os.sep, "/")
    assert json.loads(out) == [
        {"path": f"{base}/agents/b.yaml", "line": 1, "column": 1, "severity": "error",
         "message": "top level must be a mapping of keys to values (got a list)"},
        {"path": f"{base}/agents/support.yaml", "line": 3, "column": 14, "severity": "error",
         "message": "temperature: must be at most 2 (got 3.5)"},
    ]


def test_json_format_clean_is_an_empty_array(tree: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", str(tree), "--format", "json")
    assert (code, json.loads(out)) == (0, [])


def test_github_format(tree: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tree, {"agents/support.yaml": BAD})
    monkeypatch.chdir(tree)
    code, out, _ = run(capsys, "validate", "--format", "github")
    assert (code, out) == (1, "::error file=agents/support.yaml,line=3,col=14::temperature: "
                              "must be at most 2 (got 3.5)\n")


def test_warnings_pass_unless_strict(tree: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tree, {"agents/support.yaml": SUPPORT + "metadata: {owner: AKIAABCDEFGHIJKLMNOP}\n"})
    monkeypatch.chdir(tree)
    expected = ("agents/support.yaml:7:19: warning: metadata.owner: looks like an AWS access key "
                "id; keep credentials out of git and rotate this one\n")
    assert run(capsys, "validate")[:2] == (0, expected)
    assert run(capsys, "validate", "--strict")[:2] == (1, expected)
    code, out, _ = run(capsys, "validate", "--format", "github")
    assert code == 0
    assert out.startswith("::warning file=agents/support.yaml,line=7,col=19::")


@pytest.mark.parametrize(("argv", "message"), [
    (["validate", "/no/such/dir"],
     "configsync: error: no such file or directory: /no/such/dir\n"),
    (["validate", "{tree}", "--ref", "HEAD"], "configsync: error: not a git repository: {tree}\n"),
])
def test_usage_errors_exit_2(tree: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                             message: str) -> None:
    argv = [a.format(tree=tree) for a in argv]
    assert run(capsys, *argv) == (2, "", message.format(tree=tree))


def test_unknown_ref_exits_2(git_tree: GitTree, capsys: pytest.CaptureFixture[str]) -> None:
    for ref in ("no-such-branch", "--output=/tmp/x"):
        code, out, err = run(capsys, "validate", str(git_tree.root), f"--ref={ref}")
        assert (code, out) == (2, "")
        assert err == (f"configsync: error: unknown git ref: {ref} "
                       "(is it fetched, and spelled right?)\n")


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", "--format", "xml"])
    assert info.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_ref_reads_the_commit_not_the_working_tree(git_tree: GitTree,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(git_tree.root)
    good = git_tree.commit("good")
    git_tree.write({"agents/support.yaml": BAD})
    bad = git_tree.commit("bad")
    git_tree.write({"agents/support.yaml": SUPPORT})  # fixed in the working tree only
    assert run(capsys, "validate")[0] == 0
    assert run(capsys, "validate", "--ref", good)[0] == 0
    code, out, _ = run(capsys, "validate", "--ref", bad)
    assert (code, out) == (1, "agents/support.yaml:3:14: error: temperature: must be at most 2 "
                              "(got 3.5)\n")
    assert run(capsys, "validate", "--ref", "HEAD~1")[0] == 0
    assert run(capsys, "validate", "--ref", "main")[0] == 1


def test_ref_with_committed_symlinks(git_tree: GitTree, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text("system_prompt: stolen\nmodel: gpt-4o\n")
    (git_tree.root / "agents" / "link.yaml").symlink_to(outside)
    (git_tree.root / "prompts").mkdir()
    (git_tree.root / "prompts" / "p.md").symlink_to("/etc/hostname")
    write_tree(git_tree.root, {
        "agents/uses.yaml": "system_prompt_file: prompts/p.md\nmodel: gpt-4o\n"})
    git_tree.commit("symlinks")
    outside.unlink()  # the target is gone: only a follower would notice
    code, out, _ = run(capsys, "validate", str(git_tree.root), "--ref", "HEAD",
                       "--format", "json")
    assert code == 1
    assert [(d["path"].rsplit("/", 2)[-2:], d["message"]) for d in json.loads(out)] == [
        (["agents", "link.yaml"],
         "is a symlink; configsync never follows symlinks: commit the file itself"),
        (["prompts", "p.md"],
         "is a symlink; configsync never follows symlinks: commit the file itself"),
    ]


def test_ref_in_a_subfolder_of_a_monorepo(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    repo = GitTree(tmp_path / "mono")
    repo.write({"configs/configsync.yaml": SETTINGS, "configs/agents/support.yaml": BAD,
                "src/app.py": "print('hi')\n"})
    repo.commit("monorepo")
    monkeypatch.chdir(repo.root)
    code, out, _ = run(capsys, "validate", "configs", "--ref", "HEAD")
    assert (code, out) == (1, "configs/agents/support.yaml:3:14: error: temperature: must be at "
                              "most 2 (got 3.5)\n")


def test_ref_reads_many_files_through_one_batch(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    repo = GitTree(tmp_path / "many")
    files: dict[str, str | bytes] = {"configsync.yaml": SETTINGS}
    for i in range(300):  # identical content: one blob shared by many paths
        files[f"agents/a{i:03d}.yaml"] = SUPPORT if i % 100 else BAD
    repo.write(files)
    repo.commit("many")
    code, out, err = run(capsys, "validate", str(repo.root), "--ref", "HEAD")
    assert code == 1
    assert len(out.splitlines()) == 3
    assert err == "configsync: 3 errors, 0 warnings (301 files checked)\n"


def test_working_tree_needs_no_git(tree: Path) -> None:
    bindir = Path(sys.executable).parent
    assert not (bindir / "git").exists()
    env = {"PATH": str(bindir), "HOME": os.environ["HOME"],
           "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    write_tree(tree, {"agents/support.yaml": BAD})
    proc = subprocess.run([sys.executable, "-m", "configsync", "validate", str(tree)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "temperature: must be at most 2 (got 3.5)" in proc.stdout


@pytest.mark.parametrize("content", [b"\xff\xfe\x00", b"a: !!python/object:os.system x\n",
                                     b"[" * 100_000, b"- " * 100_000],
                         ids=["utf-16", "unsafe-tag", "deep-flow", "deep-block"])
def test_no_traceback_for_bad_input(tree: Path, content: bytes) -> None:
    write_tree(tree, {"configsync.yaml": SETTINGS + "limits: {max_file_bytes: 300000}\n",
                      "agents/support.yaml": content})
    proc = subprocess.run([sys.executable, "-m", "configsync", "validate", str(tree)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout.startswith(f"{tree}/agents/support.yaml:1:")


def test_missing_settings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path, {"agents/support.yaml": SUPPORT})
    code, out, _ = run(capsys, "validate", str(tmp_path))
    assert code == 1
    assert out == (f"{tmp_path}/configsync.yaml:1:1: error: no configsync.yaml at the repository "
                   "root; create it (`namespace: default` is enough to start)\n")


def test_internal_errors_exit_3_with_a_log(tree: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "check_tree", broken)
    code, out, err = run(capsys, "validate", str(tree))
    assert code == 3 and out == "" and "Traceback" not in err
    log = err.rsplit(" ", 1)[-1].strip()
    assert err.startswith("configsync: internal error; please report it with the log in ")
    assert "RuntimeError: boom" in Path(log).read_text()
    Path(log).unlink()


def test_interrupt_exits_130(tree: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "check_tree", interrupted)
    assert run(capsys, "validate", str(tree)) == (130, "", "configsync: interrupted\n")


def test_schema_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "schemas"
    assert run(capsys, "schema", "--out", str(out_dir), "--check")[0] == 1
    assert run(capsys, "schema", "--out", str(out_dir))[0] == 0
    agent = json.loads((out_dir / "agent.schema.json").read_text())
    assert agent["additionalProperties"] is False
    assert agent["properties"]["temperature"]["maximum"] == 2
    settings = json.loads((out_dir / "configsync.schema.json").read_text())
    assert "schema" in settings["properties"]
    assert run(capsys, "schema", "--out", str(out_dir), "--check") == (0, "", "")
    (out_dir / "agent.schema.json").write_text("{}\n")
    code, _, err = run(capsys, "schema", "--out", str(out_dir), "--check")
    assert code == 1
    assert err == (f"configsync: {out_dir}/agent.schema.json is stale; run `configsync schema "
                   f"--out {out_dir}` and commit the result\n")


def test_committed_schemas_and_examples_are_current(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    project = Path(__file__).parents[1]
    monkeypatch.chdir(project)
    assert run(capsys, "schema", "--check") == (0, "", "")
    code, out, err = run(capsys, "validate", "--strict")
    assert (code, out, err) == (0, "", "configsync: 4 agents OK (5 files checked)\n")
    if (project / ".git").exists():
        assert run(capsys, "validate", "--ref", "HEAD")[0] == 0


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("configsync ")


def test_console_script_and_module_agree(tree: Path) -> None:
    git(tree, "init", "-q")
    proc = subprocess.run([sys.executable, "-m", "configsync", "validate", str(tree)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == ""


@pytest.mark.parametrize("out", ["/etc/passwd", "/proc/no/such"])
def test_schema_out_that_cannot_be_written_is_a_usage_error(
        out: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--out", out]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"configsync: error: cannot write {out}/agent.schema.json: ")
    assert line.endswith("(--out names the folder for the schema files)")


MAPPING = {"./schemas/agent.schema.json": ["agents/**/*.yaml", "agents/**/*.yml"],
           "./schemas/configsync.schema.json": ["configsync.yaml"]}


def test_summary_counts_one_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path, {"configsync.yaml": SETTINGS})
    assert run(capsys, "validate", str(tmp_path)) == (
        0, "", "configsync: 0 agents OK (1 file checked)\n")


def test_schema_maps_nested_agents_in_vscode_settings(
        tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No per-file `$schema` comment (whose `../` differs by depth): one glob for agents/**."""
    monkeypatch.chdir(tree)
    assert run(capsys, "schema") == (0, "", "wrote schemas/agent.schema.json\nwrote "
                                            "schemas/configsync.schema.json\nwrote "
                                            ".vscode/settings.json\n")
    assert json.loads((tree / ".vscode/settings.json").read_text()) == {"yaml.schemas": MAPPING}
    assert run(capsys, "schema", "--check") == (0, "", "")
    (tree / ".vscode/settings.json").unlink()
    assert run(capsys, "schema", "--check") == (1, "", (
        "configsync: .vscode/settings.json is missing; run `configsync schema --out schemas` and "
        "commit the result\n"))
    write_tree(tree, {".vscode/settings.json": '{"yaml.schemas": {"./schemas/agent.schema.json":'
                                               ' "agents/*.yaml"}}'})
    assert run(capsys, "schema", "--check") == (1, "", (
        "configsync: .vscode/settings.json does not map the schemas (`yaml.schemas`); run "
        "`configsync schema --out schemas` and commit the result\n"))


def test_schema_merges_into_existing_vscode_settings(
        tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    write_tree(tree, {".vscode/settings.json": json.dumps(
        {"editor.tabSize": 2, "yaml.schemas": {"other.json": ["ci/*.yaml"]}})})
    assert run(capsys, "schema")[0] == 0
    assert json.loads((tree / ".vscode/settings.json").read_text()) == {
        "editor.tabSize": 2, "yaml.schemas": {"other.json": ["ci/*.yaml"], **MAPPING}}


COMMENTED = """{
  // tabs are two spaces here
  "editor.tabSize": 2, /* the team's choice */
  "yaml.schemas": {"a.json": "x.yaml",},
}
"""


def test_vscode_settings_with_comments_are_never_rewritten(
        tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    write_tree(tree, {".vscode/settings.json": COMMENTED})
    code, out, err = run(capsys, "schema")
    assert (code, out) == (1, "")
    assert err == (
        "configsync: error: .vscode/settings.json has comments or trailing commas, which "
        "rewriting it would lose; wrote nothing to it: add \"./schemas/agent.schema.json\": "
        "[\"agents/**/*.yaml\", \"agents/**/*.yml\"], \"./schemas/configsync.schema.json\": "
        "[\"configsync.yaml\"] to its `yaml.schemas` yourself\n")
    assert (tree / ".vscode/settings.json").read_text() == COMMENTED
    assert not (tree / "schemas").exists()
    assert run(capsys, "schema", "--check")[0] == 1
    # with the mapping added by hand, comments and all, it is current
    added = COMMENTED.replace('"a.json": "x.yaml",', '"a.json": "x.yaml", // ours:\n' + ",\n".join(
        f"{json.dumps(k)}: {json.dumps(v)}" for k, v in MAPPING.items()) + ",")
    write_tree(tree, {".vscode/settings.json": added})
    assert run(capsys, "schema")[0] == 0
    assert run(capsys, "schema", "--check") == (0, "", "")
    assert (tree / ".vscode/settings.json").read_text() == added


def test_vscode_settings_that_cannot_be_parsed_are_left_alone(
        tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    write_tree(tree, {".vscode/settings.json": '{\n  "editor.tabSize": 2\n  "x": 1\n}\n'})
    for argv in (["schema"], ["schema", "--check"]):
        assert run(capsys, *argv) == (1, "", (
            "configsync: error: cannot parse .vscode/settings.json (line 3 column 3: Expecting "
            "',' delimiter); wrote nothing to it: fix it, or add {\"yaml.schemas\": "
            "{\"./schemas/agent.schema.json\": [\"agents/**/*.yaml\", \"agents/**/*.yml\"], "
            "\"./schemas/configsync.schema.json\": [\"configsync.yaml\"]}} to it yourself\n"))
    assert not (tree / "schemas").exists()


# -- issue 10 item 5: where validate looks ---------------------------------------------------


def test_validate_in_a_subfolder_finds_configsync_yaml_above(
        git_tree: GitTree, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    git_tree.write({"agents/support.yaml": BAD})
    monkeypatch.chdir(git_tree.root / "agents")
    assert run(capsys, "validate") == (
        1, "../agents/support.yaml:3:14: error: temperature: must be at most 2 (got 3.5)\n",
        "configsync: 1 error, 0 warnings (2 files checked)\n")
    git_tree.commit("bad")
    assert run(capsys, "validate", "--ref", "HEAD")[:2] == (
        1, "../agents/support.yaml:3:14: error: temperature: must be at most 2 (got 3.5)\n")


def test_upward_search_stops_at_the_repository_root(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path, {"configsync.yaml": "namespace: [not, this, one]\n"})
    repo = GitTree(tmp_path / "repo")
    repo.write({"agents/support.yaml": SUPPORT})
    monkeypatch.chdir(repo.root / "agents")
    assert run(capsys, "validate")[:2] == (
        1, "../configsync.yaml:1:1: error: no configsync.yaml at the repository root; create it "
           "(`namespace: default` is enough to start)\n")


def test_upward_search_never_follows_a_symlink_out(tree: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = write_tree(tmp_path / "elsewhere", {"configsync.yaml": "namespace: [x]\n",
                                                    "team/readme.md": "hi\n"})
    (tree / "agents" / "team").symlink_to(elsewhere / "team")
    code, out, _ = run(capsys, "validate", str(tree / "agents" / "team"))
    assert (code, out) == (1, f"{tree}/agents/team:1:1: error: is a symlink; configsync never "
                              "follows symlinks: commit the file itself\n")


def test_files_named_are_reported_on_against_the_whole_tree(
        tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tree, {"agents/other.yaml": BAD,
                      "agents/child.yaml": "extends: support\ntemperature: 0.5\n"})
    monkeypatch.chdir(tree)
    assert run(capsys, "validate", "agents/child.yaml") == (
        0, "", "configsync: 1 agent OK (1 file checked)\n")  # extends resolves in the tree
    assert run(capsys, "validate", "agents/other.yaml", "agents/support.yaml") == (
        1, "agents/other.yaml:3:14: error: temperature: must be at most 2 (got 3.5)\n",
        "configsync: 1 error, 0 warnings (2 files checked)\n")
    monkeypatch.chdir(tree / "agents")
    assert run(capsys, "validate", "child.yaml")[:2] == (0, "")


def test_a_named_file_reports_the_files_it_bears_on(tree: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tree, {"agents/child.yaml": "extends: support\ntemperature: 9\n",
                      "agents/other.yaml": BAD, "agents/old.yml": SUPPORT,
                      "agents/old.yaml": SUPPORT})
    monkeypatch.chdir(tree)
    assert run(capsys, "validate", "agents/support.yaml")[:2] == (  # not other.yaml's error
        1, "agents/child.yaml:2:14: error: temperature: must be at most 2 (got 9)\n")
    assert run(capsys, "validate", "agents/old.yaml")[:2] == (  # said at the older twin
        1, "agents/old.yml:1:1: error: agent id `old` is also defined by agents/old.yaml\n")
    write_tree(tree, {"prompts/p.md": "hi\n", "agents/child.yaml":
                      "extends: support\nsystem_prompt: null\nsystem_prompt_file: prompts/p.md\n"
                      "temperature: 9\n"})
    assert run(capsys, "validate", "prompts/p.md")[:2] == (
        1, "agents/child.yaml:4:14: error: temperature: must be at most 2 (got 9)\n")


@pytest.mark.parametrize(("name", "message"), [
    ("agents/nope.yaml", "no such file or directory: agents/nope.yaml"),
    ("README.md", "README.md is not a config file: configsync reads configsync.yaml, "
                  ".gitattributes, agents/ and prompts/ in {tree}"),
])
def test_a_file_named_that_is_missing_or_no_config_is_a_usage_error(
        tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        name: str, message: str) -> None:
    write_tree(tree, {"README.md": "# hi\n"})
    monkeypatch.chdir(tree)
    assert run(capsys, "validate", "agents/support.yaml", name) == (
        2, "", f"configsync: error: {message.format(tree=tree)}\n")


def test_folder_and_files_together_is_a_usage_error(tree: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", str(tree), str(tree / "agents" / "support.yaml"))
    assert (code, out) == (2, "")
    assert err.startswith("configsync: error: give one folder, or files, not both")


def test_ref_in_a_repository_with_no_commits(tree: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    git(tree, "init", "-q")
    assert run(capsys, "validate", str(tree), "--ref", "HEAD") == (
        2, "", "configsync: error: the repository has no commits yet, so there is no HEAD to "
               "validate; commit first, or validate the working tree (no --ref) or what is "
               "staged (--cached)\n")


def test_github_paths_are_from_the_repository_top(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    repo = GitTree(tmp_path / "mono")
    repo.write({"configs/configsync.yaml": SETTINGS, "configs/agents/support.yaml": BAD})
    expected = ("::error file=configs/agents/support.yaml,line=3,col=14::temperature: must be "
                "at most 2 (got 3.5)\n")
    for folder in ("configs/agents", "configs", "."):
        monkeypatch.chdir(repo.root / folder)
        args = ["configs"] if folder == "." else []
        assert run(capsys, "validate", *args, "--format", "github")[:2] == (1, expected)
    monkeypatch.chdir(repo.root / "configs" / "agents")
    assert run(capsys, "validate", "support.yaml", "--format", "github")[:2] == (1, expected)


# -- issue 10 item 6: the pre-commit hook validates what is being committed -------------------


def test_cached_validates_the_index_not_the_working_tree(
        git_tree: GitTree, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(git_tree.root)
    git_tree.write({"agents/new.yaml": BAD,  # untracked: not being committed
                    "agents/billing.yaml": SUPPORT})
    git(git_tree.root, "add", "agents/billing.yaml")
    assert run(capsys, "validate")[0] == 1  # the working tree holds the bad file
    assert run(capsys, "validate", "--cached") == (
        0, "", "configsync: 2 agents OK (3 files checked)\n")
    git(git_tree.root, "add", "agents/new.yaml")
    git_tree.write({"agents/new.yaml": SUPPORT})  # fixed, but the fix is not staged
    assert run(capsys, "validate", "--cached")[:2] == (
        1, "agents/new.yaml:3:14: error: temperature: must be at most 2 (got 3.5)\n")
    assert run(capsys, "validate", "--cached", "agents/billing.yaml")[0] == 0


def test_cached_and_ref_together_is_a_usage_error(git_tree: GitTree,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", str(git_tree.root), "--cached", "--ref", "HEAD"])
    assert info.value.code == 2
    assert capsys.readouterr().err == ("configsync: error: argument --ref: not allowed with "
                                       "argument --cached (see `configsync validate --help`)\n")


def test_the_pre_commit_hook_judges_only_what_is_committed(
        git_tree: GitTree, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    import yaml

    hooks_file = Path(__file__).parents[1] / ".pre-commit-hooks.yaml"
    (hook,) = yaml.safe_load(hooks_file.read_text())
    assert hook["pass_filenames"] is False  # a deletion breaks files no one names
    program, *entry = shlex.split(hook["entry"])
    assert program == "configsync"
    monkeypatch.chdir(git_tree.root)  # pre-commit runs hooks at the repository's top
    git_tree.write({"agents/new.yaml": BAD, "agents/support.yaml": SUPPORT.replace("0.3", "0.4")})
    git(git_tree.root, "add", "agents/support.yaml")
    assert run(capsys, *entry)[:2] == (0, "")
    git(git_tree.root, "add", "agents/new.yaml")
    assert run(capsys, *entry)[0] == 1
    assert "rev: <" not in hooks_file.read_text()  # the usage comment names a real rev




def test_a_named_agent_fails_with_its_broken_base(tree: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Red team: `validate agents/child.yaml` exited 0 ('0 agents OK') while its base was
    broken, and a plain `validate` (the daemon's verdict) failed."""
    write_tree(tree, {"agents/child.yaml": "extends: support\ntemperature: 0.5\n",
                      "agents/support.yaml": "system_prompt: hi\nmodel: gpt-5\n",
                      "prompts/p.md": "hi\n"})
    monkeypatch.chdir(tree)
    code, out, _ = run(capsys, "validate", "agents/child.yaml")
    assert code == 1 and "agents/support.yaml:2:8: error: model: `gpt-5` is not an allowed" in out


def test_the_hook_runs_on_every_commit() -> None:
    """Red team: pre-commit passes no deleted file to `files:`, so a commit that only deletes
    a base was skipped; and a root-anchored pattern never matched a monorepo's configs."""
    import yaml
    (hook,) = yaml.safe_load((Path(__file__).parents[1] / ".pre-commit-hooks.yaml").read_text())
    assert hook["always_run"] is True and hook["pass_filenames"] is False
    assert hook["entry"] == "configsync validate --cached"


def test_schema_from_a_subfolder_writes_the_repositorys_files(
        tree: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Red team: run from agents/, `configsync schema` wrote agents/schemas and agents/.vscode;
    it finds the config repository's root as `validate` does."""
    monkeypatch.chdir(tree / "agents")
    assert run(capsys, "schema") == (0, "", "wrote ../schemas/agent.schema.json\nwrote "
                                            "../schemas/configsync.schema.json\nwrote "
                                            "../.vscode/settings.json\n")
    assert not (tree / "agents" / "schemas").exists()
    assert run(capsys, "schema", "--check") == (0, "", "")


@pytest.mark.parametrize("argv", [["history", "--redis", "support"],
                                  ["rollback", "--redis", "support", "--to", "1"],
                                  ["diff", "--redis", "support@v1", "support@v2"]])
def test_a_bare_redis_option_leaves_the_next_word_to_the_command(
        git_tree: GitTree, argv: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--redis`` takes an optional URL: the agent or ref after it is not taken for one."""
    monkeypatch.chdir(git_tree.root)
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("configsync: error: no Redis to read: pass "
                                              "--redis URL or set CONFIGSYNC_REDIS_URL")
