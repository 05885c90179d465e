"""The one module that runs git, on real repositories."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from configsync.errors import GitError, UsageError
from configsync.git import GitRepo

from .conftest import GitHttp, GitTree, Remote, git


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


def _processes(fragment: str) -> list[str]:
    """Command lines of the live processes whose argv holds ``fragment``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
            if fragment in cmdline and "pytest" not in cmdline:
                found.append(cmdline)
        except OSError:
            continue
    return found


def git_shim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, times: int) -> Path:
    """Put a `git` on PATH that runs the real one, except that it is SIGKILLed (as by the OOM
    killer, or a flaky machine) the first ``times`` times it runs ``command``."""
    import shutil

    real = shutil.which("git")
    shim = tmp_path / "shim"
    shim.mkdir()
    count = tmp_path / "shim-count"
    count.write_text("0")
    (shim / "git").write_text(
        "#!/bin/bash\n"
        f'if [ "$1" = "{command}" ]; then\n'
        f'  n=$(cat {count}); echo $((n + 1)) > {count}\n'
        f'  if [ "$n" -lt {times} ]; then kill -9 $$; fi\n'
        "fi\n"
        f'exec {real} "$@"\n')
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    return count


def test_is_ancestor_says_no_only_when_git_says_no(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from configsync.git import Mirror

    repo = GitTree(tmp_path / "r")
    first = repo.commit("one")
    git(repo.root, "checkout", "-q", "-b", "side")
    side = repo.commit("side")
    git(repo.root, "checkout", "-q", "main")
    second = repo.commit("two")
    with Mirror(tmp_path / "mirror", str(repo.root)) as mirror:
        mirror.fetch("main")
        mirror.fetch("side")
        assert mirror.is_ancestor(first, second) and not mirror.is_ancestor(side, second)
        assert mirror.has_commit(second) and not mirror.has_commit("0" * 40)
        with pytest.raises(GitError, match="git merge-base failed"):
            mirror.is_ancestor("0" * 40, second)  # exit 128: an error, not a "no"
        git_shim(tmp_path, monkeypatch, "merge-base", 1)
        with pytest.raises(GitError, match="git merge-base failed: exit status -9"):
            mirror.is_ancestor(first, second)  # killed: an error to retry, not a "no"
        assert mirror.is_ancestor(first, second)


def test_credentials_never_reach_argv_or_disk(tmp_path: Path) -> None:
    import threading

    from configsync.git import Mirror

    remote = Remote(tmp_path / "git")
    head = remote.commit_push("one", {"agents/a.yaml": "a: 1\n"})
    server = GitHttp(remote.url, user="ada", password="s3cr3t-pw")
    home = Path(os.environ["HOME"])  # a common server set-up: git's `store` helper
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    server.delay = 0.1  # long enough to look at the processes mid-fetch
    try:
        url = server.url.replace("http://", "http://ada:s3cr3t-pw@")
        seen: list[str] = []
        with Mirror(tmp_path / "mirror", url) as mirror:
            fetching = threading.Thread(target=mirror.fetch, args=("main",))
            fetching.start()
            while fetching.is_alive():
                seen += _processes("127.0.0.1")
            fetching.join()
            assert mirror.head("main") == head
            assert any("git" in line for line in seen)  # git was running, and looked at
            assert not [line for line in seen if "s3cr3t" in line]
            on_disk = [p for p in (tmp_path / "mirror").rglob("*")
                       if p.is_file() and b"s3cr3t" in p.read_bytes()]
            assert on_disk == []
        with Mirror(tmp_path / "mirror2", server.url.replace("http://", "http://ada@"),
                    token="s3cr3t-pw") as mirror:
            mirror.fetch("main")  # --token-env: the token as the password
            assert mirror.head("main") == head
        assert not (home / ".git-credentials").exists()  # never written to disk by a helper
        with Mirror(tmp_path / "mirror3", server.url) as mirror, \
                pytest.raises(GitError, match=r"\(check the credentials: the URL's user and "
                                              r"password, or --token-env\)"):
            mirror.fetch("main")
    finally:
        server.close()


def test_a_silent_remote_times_out_and_leaves_no_process(tmp_path: Path) -> None:
    import threading

    from configsync.git import Mirror

    from .conftest import GitHttp, Remote, wait_until

    remote = Remote(tmp_path / "git")
    remote.commit_push("one", {"agents/a.yaml": "a: 1\n"})
    server = GitHttp(remote.url)
    server.silent = True
    try:
        with Mirror(tmp_path / "mirror", server.url, timeout=1) as mirror:
            with pytest.raises(GitError, match=r"git fetch http://127\.0\.0\.1:\d+/repo\.git main "
                                               r"timed out after 1 s"):
                mirror.fetch("main")
            # git and git-remote-http both gone (the group's SIGKILL lands at once; a busy
            # machine may take a moment to reap)
            wait_until(lambda: _processes(server.url) == [], timeout=10)
            mirror.timeout = 60
            mirror.stop = threading.Event()
            threading.Timer(0.5, mirror.stop.set).start()
            with pytest.raises(GitError, match="stopped: configsync is shutting down"):
                mirror.fetch("main")  # SIGTERM's stop flag ends a fetch in flight
            wait_until(lambda: _processes(server.url) == [], timeout=10)
    finally:
        server.close()


def test_pipelined_blob_reads_stay_in_step_when_a_caller_stops_early(tmp_path: Path) -> None:
    """Many blobs are requested at once; a caller that stops half-way leaves answers queued,
    and the next read must still get its own blob, not one of those."""
    repo = GitTree(tmp_path / "r")
    repo.write({f"f{i}.txt": f"content {i}\n" * (i + 1) for i in range(300)})
    repo.commit("many files")
    with GitRepo(repo.root) as gr, gr.batch():
        shas = {e.path: e.sha for e in gr.ls_tree("HEAD", ["."]) if e.path.endswith(".txt")}
        wanted = [shas[f"f{i}.txt"] for i in range(300)]
        got = dict(gr.read_blobs(wanted))
        assert all(got[shas[f"f{i}.txt"]] == (f"content {i}\n" * (i + 1)).encode()
                   for i in range(300))
        reading = gr.read_blobs(wanted)
        next(reading)
        reading.close()  # 299 answers still queued
        assert dict(gr.read_blobs([shas["f7.txt"]])) == {shas["f7.txt"]: b"content 7\n" * 8}


@pytest.mark.parametrize("lost", ["mirror", "workdir", "HEAD", "objects", "refs"])
def test_a_mirror_lost_under_a_running_process_is_made_again_at_the_next_fetch(
        lost: str, remote: Remote, tmp_path: Path) -> None:
    """A tmp cleaner or an operator removes the mirror, its whole workdir, or files in it
    (emptied folders stay): the next fetch makes it anew (issue 17, item 10). Inside
    .git/configsync/ no git command may take the user's own .git for it meanwhile."""
    from configsync.git import Mirror

    outer = GitTree(tmp_path / "outer")
    outer.commit("outer")
    workdir = outer.root / ".git" / "configsync"
    path = workdir / "mirror"
    refs = git(outer.root, "for-each-ref")
    mirror = Mirror(path, "file://" + remote.url)
    try:
        mirror.fetch("main")
        first = mirror.head("main")
        with mirror.batch():  # a cat-file --batch over the folder that goes away
            list(mirror.read_blobs([mirror.ls_tree(first, ["agents"])[0].sha]))
            {"mirror": lambda: shutil.rmtree(path), "workdir": lambda: shutil.rmtree(workdir),
             "HEAD": lambda: (path / "HEAD").unlink(),
             "objects": lambda: shutil.rmtree(path / "objects"),
             "refs": lambda: shutil.rmtree(path / "refs")}[lost]()
            if lost in ("HEAD", "refs"):  # what git would find instead: the user's .git
                with pytest.raises(GitError):
                    mirror.head("main")
            sha = remote.commit_push("after", {"agents/a.yaml": "system_prompt: A2.\n"
                                                                "model: gpt-4o\n"})
            mirror.fetch("main")
            assert mirror.head("main") == sha
            assert mirror.recorded_branch() == "main"
            assert mirror.has_commit(first)
            blob = mirror.ls_tree(sha, ["agents/a.yaml"])[0].sha
            assert next(mirror.read_blobs([blob]))[1].startswith(b"system_prompt: A2.")
    finally:
        mirror.close()
    assert git(outer.root, "for-each-ref") == refs  # the user's .git is never touched


def test_the_askpass_script_is_written_again_when_it_was_lost(remote: Remote,
                                                              tmp_path: Path) -> None:
    from configsync.git import Mirror

    server = GitHttp(remote.url, user="ada", password="s3cr3t-pw")
    mirror = Mirror(tmp_path / "mirror", server.url.replace("://", "://ada:s3cr3t-pw@", 1))
    try:
        mirror.fetch("main")
        shutil.rmtree(tmp_path / "mirror")
        mirror.fetch("main")  # (refused without the script: git cannot ask for the password)
        assert (tmp_path / "mirror" / "configsync-askpass").is_file()
        assert mirror.head("main") == git(Path(remote.url), "rev-parse", "main").strip()
    finally:
        mirror.close()
        server.close()
