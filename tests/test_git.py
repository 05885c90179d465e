"""The one module that runs git, on real repositories."""

from __future__ import annotations

from pathlib import Path

import pytest

from configsync.errors import GitError, UsageError
from configsync.git import GitRepo

from .conftest import GitTree, git


def test_resolve_ls_tree_and_read_blobs(tmp_path: Path) -> None:
    repo = GitTree(tmp_path / "r")
    repo.write({"agents/a.yaml": "a: 1\n", "agents/b.yaml": "a: 1\n", "prompts/p.md": "P\n",
                "other.txt": "x\n"})
    head = repo.commit()
    (repo.root / "agents" / "l.yaml").symlink_to("a.yaml")
    repo.commit("link")
    with GitRepo(repo.root) as g:
        assert g.resolve("HEAD~1") == head
        assert g.resolve("main") == git(repo.root, "rev-parse", "HEAD").strip()
        entries = {e.path: e for e in g.ls_tree("HEAD", ["agents", "prompts"])}
        assert sorted(entries) == ["agents/a.yaml", "agents/b.yaml", "agents/l.yaml",
                                   "prompts/p.md"]
        assert entries["agents/l.yaml"].is_symlink and not entries["agents/l.yaml"].is_file
        assert entries["agents/a.yaml"].size == 5
        assert entries["agents/a.yaml"].sha == entries["agents/b.yaml"].sha
        blobs = dict(g.read_blobs([entries["prompts/p.md"].sha, entries["agents/a.yaml"].sha]))
        assert blobs == {entries["prompts/p.md"].sha: b"P\n",
                         entries["agents/a.yaml"].sha: b"a: 1\n"}
        assert list(g.read_blobs([])) == []


def test_prefix_of_a_subfolder(tmp_path: Path) -> None:
    repo = GitTree(tmp_path / "mono")
    repo.write({"cfg/agents/a.yaml": "a: 1\n", "agents/outside.yaml": "b: 2\n"})
    repo.commit()
    with GitRepo(repo.root / "cfg") as g:
        assert g.prefix == "cfg/"
        assert [e.path for e in g.ls_tree("HEAD", ["agents"])] == ["agents/a.yaml"]


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a git repository"):
        GitRepo(tmp_path)
    repo = GitTree(tmp_path / "r")
    repo.commit()
    with GitRepo(repo.root) as g:
        with pytest.raises(UsageError, match="unknown git ref: nope"):
            g.resolve("nope")
        with pytest.raises(GitError, match="git ls-tree failed"):
            g.ls_tree("0" * 40, ["agents"])
        with pytest.raises(GitError, match="git cat-file failed to read object"):
            list(g.read_blobs(["0" * 40]))


def test_a_half_made_mirror_is_made_again_and_never_taken_for_a_parent_repo(
        tmp_path: Path) -> None:
    """A daemon killed while `git init` made its mirror left a folder that is no repository.
    Inside .git/configsync/ the next start must neither fail for ever nor search upwards and
    take the user's own .git for the mirror."""
    from configsync.git import Mirror

    outer = GitTree(tmp_path / "outer")
    outer.commit("outer")
    path = outer.root / ".git" / "configsync" / "mirror"
    path.mkdir(parents=True)
    (path / "HEAD").write_text("ref: refs/heads/main\n")  # half made: no objects, no refs
    with Mirror(path, "unused") as mirror:
        assert mirror.git_dir == path and mirror.bare
        assert (path / "objects").is_dir()
    foreign = tmp_path / "work" / "mirror"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine\n")
    with pytest.raises(GitError, match="exists and is not a git mirror"):
        Mirror(foreign, "unused")
    assert (foreign / "notes.txt").read_text() == "mine\n"
