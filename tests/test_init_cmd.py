"""`configsync init`: the scaffold validates clean, works with every tool, never overwrites."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from configsync import __version__
from configsync.cli import main
from configsync.scaffold import DEVELOPMENT_REF, release_ref, sanitize_namespace

from .conftest import git
from .test_action import CALL, _lint_calling_this_checkout, readme_workflows

WRITTEN = ["configsync.yaml", "agents/example.yaml", "prompts/example.md",
           "schemas/agent.schema.json", "schemas/configsync.schema.json",
           ".vscode/settings.json", ".gitignore", ".github/workflows/configsync.yml",
           ".pre-commit-config.yaml"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_scaffold_validates_and_its_schemas_are_current(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "support-configs"
    code, out, _ = run(capsys, "init", str(target))
    assert code == 0
    assert [line.removeprefix("wrote ") for line in out.splitlines()
            if line.startswith("wrote ")] == [f"{target.as_posix()}/{p}" for p in WRITTEN]
    assert "created an empty git repository" in out and "next steps:" in out
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")
                  if p.is_file() and ".git" not in p.relative_to(target).parts[:1]) == sorted(
        WRITTEN)
    assert git(target, "rev-parse", "--is-inside-work-tree").strip() == "true"
    assert git(target, "rev-list", "--all").strip() == ""  # nothing committed
    assert run(capsys, "validate", "--strict", str(target))[0] == 0
    monkeypatch.chdir(target)
    assert run(capsys, "schema", "--check")[0] == 0
    assert run(capsys, "validate", "--format", "github", "--strict", ".")[:2] == (0, "")
    git(target, "add", "-A")
    assert run(capsys, *_hook_command(target), "--strict")[0] == 0  # what pre-commit runs
    git(target, "commit", "-q", "-m", "scaffold")
    assert run(capsys, "validate", "--ref", "HEAD", "--strict")[0] == 0
    assert git(target, "status", "--porcelain") == ""  # .gitignore hides nothing it wrote


def test_inside_a_repository_no_new_one(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    git(tmp_path, "init", "-q")
    code, out, _ = run(capsys, "init", str(tmp_path / "configs"), "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["git_init"] is False and report["namespace"] == "configs"
    assert not (tmp_path / "configs" / ".git").exists()


def test_refuses_to_overwrite_and_force_overwrites(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "example.yaml").write_text("mine\n")
    (tmp_path / ".gitignore").write_text("mine\n")
    code, out, err = run(capsys, "init", str(tmp_path))
    assert (code, out) == (2, "")
    assert err == (f"configsync: error: {tmp_path} already has agents/example.yaml, .gitignore; "
                   "nothing was written (--force overwrites them)\n")
    assert not (tmp_path / "configsync.yaml").exists()
    assert (tmp_path / ".gitignore").read_text() == "mine\n"
    assert run(capsys, "init", "--force", str(tmp_path))[0] == 0
    assert (tmp_path / ".gitignore").read_text() != "mine\n"
    assert run(capsys, "validate", "--strict", str(tmp_path))[0] == 0


def test_defaults_to_the_current_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "team.configs"
    folder.mkdir()
    monkeypatch.chdir(folder)
    code, out, _ = run(capsys, "init", "--namespace", "prod")
    assert code == 0 and "wrote configsync.yaml\n" in out and "  cd " not in out
    assert yaml.safe_load((folder / "configsync.yaml").read_text())["namespace"] == "prod"


@pytest.mark.parametrize(("name", "namespace"), [
    ("support-configs", "support-configs"),
    ("My Configs!", "My-Configs"),
    ("..hidden__", "hidden"),
    ("été", "t"),
    ("日本", "default"),
    ("x" * 150, "x" * 100),
    ("a.b_c", "a.b_c"),
    # issue 17: never a dev namespace, which validate refuses (a daemon applying it stopped)
    ("foo-dev", "foo"),
    ("Foo-DEV", "Foo"),
    ("foo dev", "foo"),
    ("foo_-dev", "foo"),
    ("foo-dev-dev", "foo"),
    ("-dev", "dev"),
    ("a.dev", "a.dev"),
])
def test_namespace_from_the_folder_name(name: str, namespace: str) -> None:
    assert sanitize_namespace(name) == namespace


@pytest.mark.parametrize("namespace", ["1.0", "true", "null", "123", "on"])
def test_namespace_that_yaml_would_read_as_no_string(
        namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "init", str(tmp_path), "--namespace", namespace)[0] == 0
    assert yaml.safe_load((tmp_path / "configsync.yaml").read_text())["namespace"] == namespace
    assert run(capsys, "validate", "--strict", str(tmp_path))[0] == 0


def test_bad_namespace_is_a_usage_error(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["init", str(tmp_path), "--namespace", "a:b"])
    assert exc.value.code == 2
    assert not (tmp_path / "configsync.yaml").exists()


HOOKS = yaml.safe_load((Path(__file__).parents[1] / ".pre-commit-hooks.yaml").read_text())


def test_workflow_and_pre_commit_config(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    git(tmp_path, "config", "--global", "init.defaultBranch", "main")  # (HOME is a temp folder)
    assert run(capsys, "init", str(tmp_path))[0] == 0
    workflow = yaml.safe_load((tmp_path / ".github/workflows/configsync.yml").read_text())
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["jobs"] == {"validate": {  # one job: the reusable workflow does the rest
        "uses": CALL, "with": {"path": ".", "python-version": "3.12", "strict": True}}}
    assert set(workflow[True]) == {"pull_request", "push"}  # every change: no paths filter
    assert workflow == yaml.safe_load(readme_workflows()[0])  # what the README shows
    hooks = yaml.safe_load((tmp_path / ".pre-commit-config.yaml").read_text())
    assert hooks == {"repos": [{"repo": "https://github.com/configsync/configsync",
                                "rev": "main", "hooks": [{"id": "configsync-validate"}]}]}
    assert "configsync-validate" in [h["id"] for h in HOOKS]


def _hook_command(top: Path) -> list[str]:
    """The command pre-commit runs for configsync's hook in ``top`` (entry, then args)."""
    (repo,) = yaml.safe_load((top / ".pre-commit-config.yaml").read_text())["repos"]
    (hook,) = repo["hooks"]
    (entry,) = [h["entry"] for h in HOOKS if h["id"] == hook["id"]]
    return [*entry.split()[1:], *hook.get("args", [])]


def test_in_a_folder_of_a_bigger_repository_the_workflow_goes_to_its_top(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "app.py").write_text("print('the rest of the repository')\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "init", "team/configs")
    assert code == 0
    name = ".github/workflows/configsync-team-configs.yml"
    assert f"wrote {name}\n" in out and "wrote .pre-commit-config.yaml\n" in out
    assert "created an empty git repository" not in out
    assert not (tmp_path / "team/configs/.github").exists()
    assert not (tmp_path / "team/configs/.pre-commit-config.yaml").exists()
    assert f"  git add . ../../{name} ../../.pre-commit-config.yaml && git commit" in out
    workflow = yaml.safe_load((tmp_path / name).read_text())
    assert workflow["jobs"]["validate"]["with"]["path"] == "team/configs"
    for event in ("pull_request", "push"):  # a change elsewhere in the repository runs nothing
        assert workflow[True][event]["paths"] == ["team/configs/**", name]
    assert _hook_command(tmp_path) == ["validate", "--cached", "team/configs"]
    # the workflow's commands and the hook's, from the top, as GitHub and pre-commit run them
    git(tmp_path, "add", "-A")
    assert run(capsys, *_hook_command(tmp_path), "--strict")[0] == 0
    code, out, _ = run(capsys, "validate", "--format", "github", "--strict", "team/configs")
    assert (code, out) == (0, "")
    monkeypatch.chdir(tmp_path / "team/configs")
    assert run(capsys, "schema", "--check")[0] == 0
    # a second config folder gets a workflow of its own
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other").mkdir()
    assert run(capsys, "init", "other")[0] == 0
    assert sorted(p.name for p in (tmp_path / ".github/workflows").iterdir()) == [
        "configsync-other.yml", "configsync-team-configs.yml"]


def test_a_bigger_repositorys_pre_commit_config_is_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(tmp_path, "init", "-q")
    theirs = "repos:\n  - repo: local\n    hooks: []\n"
    (tmp_path / ".pre-commit-config.yaml").write_text(theirs)
    for force in ([], ["--force"]):  # theirs holds other hooks: --force does not replace it
        code, out, _ = run(capsys, "init", *force, "--format", "json", str(tmp_path / "cfg"))
        assert code == 0
        report = json.loads(out)
        assert report["kept"] == [f"{tmp_path.as_posix()}/.pre-commit-config.yaml"]
        assert report["path"] == "cfg" and report["git_init"] is False
        assert f"{tmp_path.as_posix()}/.pre-commit-config.yaml" not in report["wrote"]
        assert (tmp_path / ".pre-commit-config.yaml").read_text() == theirs
        (add,) = [step for step in report["next"] if step.startswith("add to ")]
        entry = yaml.safe_load(add.split("'s repos: ", 1)[1])
        assert entry == [{"repo": "https://github.com/configsync/configsync", "rev": "main",
                          "hooks": [{"id": "configsync-validate", "args": ["cfg"]}]}]
    code, out, _ = run(capsys, "init", "--force", str(tmp_path / "cfg"))
    assert code == 0
    assert f"kept {tmp_path.as_posix()}/.pre-commit-config.yaml (the repository's own" in out
    assert f"\n  add to {tmp_path.as_posix()}/.pre-commit-config.yaml's repos: - {{" in out


def test_the_workflow_at_the_top_counts_as_existing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(tmp_path, "init", "-q")
    workflow = tmp_path / ".github/workflows/configsync-cfg.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text("mine\n")
    code, out, err = run(capsys, "init", str(tmp_path / "cfg"))
    assert (code, out) == (2, "")
    assert "already has ../.github/workflows/configsync-cfg.yml;" in err
    assert not (tmp_path / "cfg" / "configsync.yaml").exists()
    assert run(capsys, "init", "--force", str(tmp_path / "cfg"))[0] == 0
    assert workflow.read_text() != "mine\n"


def test_help_has_an_example_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["init", "--help"])
    out = capsys.readouterr().out
    assert "example:\n  configsync init" in out and "exit codes:" in out


@pytest.mark.parametrize("default", [None, "master", "trunk"])
def test_the_workflow_runs_on_the_branch_git_init_made(
        default: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`git init` checks out init.defaultBranch (master unless configured), not always main."""
    if default is not None:
        git(tmp_path, "config", "--global", "init.defaultBranch", default)
    code, out, _ = run(capsys, "init", str(tmp_path / "cfg"), "--format", "json")
    branch = git(tmp_path / "cfg", "symbolic-ref", "--short", "HEAD").strip()
    assert branch == default or default is None
    assert code == 0 and json.loads(out)["branch"] == branch
    workflow = yaml.safe_load((tmp_path / "cfg/.github/workflows/configsync.yml").read_text())
    assert workflow[True]["push"] == {"branches": [branch]}
    assert json.loads(out)["next"][-2].endswith(f"every push to {branch}")


@pytest.mark.parametrize(("branch", "pattern"), [
    ("release+1", "release\\+1"),  # glob syntax in a branches: filter, escaped
    ("!x]", "\\!x]"),
    ("yes", "yes"),  # a YAML boolean unquoted: quoted
    ("team/configs-2.0", "team/configs-2.0"),
])
def test_the_workflow_runs_on_the_branch_checked_out(
        branch: str, pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(tmp_path, "init", "-q", "-b", branch)
    assert run(capsys, "init", str(tmp_path))[0] == 0
    text = (tmp_path / ".github/workflows/configsync.yml").read_text()
    assert yaml.safe_load(text)[True]["push"] == {"branches": [pattern]}
    _lint_calling_this_checkout(tmp_path, {"configsync.yml": text})  # actionlint takes it


@pytest.mark.parametrize(("version", "ref"), [
    ("0.1.0", "v0.1.0"), ("1.2.3", "v1.2.3"), ("1.2.3.post1", "v1.2.3.post1"),
    ("0.1.0.dev0", "main"), ("1.0.0rc1", "main"), ("1.0.0a2", "main"), ("1.0.0+local", "main"),
    ("1.0.0.dev3+g1234abc", "main")])
def test_a_release_is_pinned_by_its_tag_and_anything_else_by_main(version: str,
                                                                 ref: str) -> None:
    assert release_ref(version) == ref


def _resolves(ref: str) -> bool:
    root = Path(__file__).parents[1]
    return any(subprocess.run(["git", "rev-parse", "-q", "--verify", f"{name}^{{commit}}"],
                              cwd=root, capture_output=True).returncode == 0
               for name in (f"refs/tags/{ref}", f"refs/heads/{ref}",
                            f"refs/remotes/origin/{ref}"))


def test_init_pins_a_ref_that_exists_in_this_repository(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """Issue 17.19: init pinned `v0.1.0`, a tag this repository never had. The workflow's
    `uses: ...@REF` and the pre-commit `rev:` name the release's tag for a release, else
    `main`, with a comment that says it is not a release and how to pin a commit."""
    assert run(capsys, "init", str(tmp_path))[0] == 0
    workflow = (tmp_path / ".github/workflows/configsync.yml").read_text()
    pre_commit = (tmp_path / ".pre-commit-config.yaml").read_text()
    uses = yaml.safe_load(workflow)["jobs"]["validate"]["uses"]
    (repo,) = yaml.safe_load(pre_commit)["repos"]
    ref = uses.rsplit("@", 1)[1]
    assert ref == repo["rev"] == release_ref(__version__)
    if ref == DEVELOPMENT_REF:
        assert f"# configsync {__version__} is not a release yet: " in workflow
        assert "`pre-commit autoupdate` pins the newest commit" in pre_commit
    root = Path(__file__).parents[1]
    if not _resolves(ref) and (
            git(root, "rev-parse", "--is-shallow-repository").strip() == "true"
            or not _resolves(DEVELOPMENT_REF)):
        pytest.skip("this checkout holds neither the tags nor main (a CI checkout)")
    assert _resolves(ref), f"{ref} names no tag or branch of this repository"


def test_init_refuses_a_dev_namespace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17: a `-dev` namespace in configsync.yaml is an error (validate), so `init` never
    writes one."""
    with pytest.raises(SystemExit) as caught:
        run(capsys, "init", str(tmp_path / "x"), "--namespace", "prod-dev")
    assert caught.value.code == 2
    assert "is a configsync dev namespace" in capsys.readouterr().err
    assert not (tmp_path / "x" / "configsync.yaml").exists()


@pytest.mark.parametrize(("folder", "pattern"), [
    ("cfg[1]*", "cfg\\[1\\]\\*/**"),
    ('we"ird\\x', 'we"ird\\\\x/**'),
    ("a+b?/!c", "a\\+b\\?/\\!c/**"),
    ("team/configs", "team/configs/**"),
])
def test_the_workflows_paths_filter_matches_the_folder_alone(
        folder: str, pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 (red team, url2 item 6): `init 'cfg[1]*'` in a bigger repository wrote
    `paths: ["cfg[1]*/**", ...]`, which GitHub reads as glob syntax ([1] a class, * any
    name): changes in that folder never ran the workflow. Escaped as branch names are."""
    git(tmp_path, "init", "-q")
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "init", folder)[0] == 0
    [name] = [p.name for p in (tmp_path / ".github/workflows").iterdir()]
    text = (tmp_path / ".github/workflows" / name).read_text()
    workflow = yaml.safe_load(text)
    for event in ("pull_request", "push"):
        assert workflow[True][event]["paths"] == [pattern, f".github/workflows/{name}"]
    assert workflow["jobs"]["validate"]["with"]["path"] == folder  # (a path, not a pattern)


def test_init_force_says_nothing_to_add_when_the_hook_is_there(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17 (red team, url2 item 8): `init --force` in a bigger repository kept the
    `.pre-commit-config.yaml` init wrote itself the first time, then said "add to
    .pre-commit-config.yaml's repos: ..." for the entry already in it."""
    git(tmp_path, "init", "-q")
    (tmp_path / "app.py").write_text("print('the rest of the repository')\n")
    pre_commit = tmp_path / ".pre-commit-config.yaml"
    assert run(capsys, "init", str(tmp_path / "cfg"))[0] == 0
    written = pre_commit.read_text()
    code, out, _ = run(capsys, "init", "--force", str(tmp_path / "cfg"))
    assert code == 0 and pre_commit.read_text() == written
    assert f"kept {pre_commit.as_posix()} (the repository's own; configsync's hook for cfg " \
           "is already in it)\n" in out
    assert "add to " not in out
    code, out, _ = run(capsys, "init", "--force", "--format", "json", str(tmp_path / "cfg"))
    assert code == 0 and not [s for s in json.loads(out)["next"] if s.startswith("add to ")]
    # the hook for another folder is not this one's
    (tmp_path / "other").mkdir()
    code, out, _ = run(capsys, "init", str(tmp_path / "other"))
    assert code == 0 and f"\n  add to {pre_commit.as_posix()}'s repos: - {{" in out
