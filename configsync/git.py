"""Every git operation configsync performs; nothing else imports GitPython or runs git.

GitPython finds repositories; every command runs through :func:`_run`, which checks the exit
status for what it means (``merge-base --is-ancestor`` exits 1 for "no" and 128 for an error:
never fold both into False, as pre-commit's ``git.py`` does), runs git in a process group of its
own, and kills that whole group at a deadline or when the daemon is told to stop, so a remote
that goes silent can never hang the daemon or leave an orphan. Failures become
:class:`~configsync.errors.GitError` (or :class:`UsageError` for a path that is no repository or a
ref that does not exist) with a hint, on one line.

Blob contents are read through ``git cat-file --batch`` (one process a call, or one for a whole
walk inside :meth:`GitRepo.batch`), never through the working tree, so a symlink committed to
git is seen as a symlink and never followed.

Credentials never reach argv: an http(s) URL's user and password (or ``token``) are taken out
of the URL and handed to git by ``GIT_ASKPASS`` through the environment of git's own process.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import git as gitpython

from .errors import GitError, UsageError

__all__ = ["Change", "CommitInfo", "GitRepo", "Mirror", "RemoteRefs", "TreeEntry",
           "config_value", "init_repository", "tracks_files_under", "work_tree_top"]

_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}

SYMLINK_MODE = "120000"
SUBMODULE_MODE = "160000"


def _one_line(stderr: bytes) -> str:
    """git's message as one line: its lines joined (git explains over several)."""
    text = stderr.decode("utf-8", "replace").strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


TICK_SECONDS = 5.0
"""How often a long git command lets its caller show it is alive (the daemon's heartbeat)."""


def _run(args: Sequence[str], *, cwd: str | os.PathLike[str] | None, ok: Sequence[int] = (0,),
         env: dict[str, str] | None = None, timeout: float | None = None,
         stop: threading.Event | None = None, what: str | None = None,
         tick: Callable[[], None] | None = None,
         warnings: list[str] | None = None, stdin: bytes | None = None) -> tuple[int, str]:
    """Run ``git ARGS``; return ``(exit status, stdout)`` for a status in ``ok``, else raise
    GitError naming ``what`` (default: ``git ARGS[0]``) and git's message. ``warnings``
    receives git's stderr of a success; ``tick`` is called every TICK_SECONDS while git runs;
    ``stdin`` is written to git's standard input.

    git runs in a new process group (``start_new_session``): at ``timeout`` seconds, when
    ``stop`` is set, or when this thread is interrupted (a second SIGTERM), the whole group is
    killed (git-remote-http, ssh and all), so nothing outlives the call.
    """
    label = what or f"git {args[0]}"
    proc = subprocess.Popen(["git", *args], cwd=cwd,
                            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **_ENV, **(env or {})}, start_new_session=True)
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    ticked = started
    done = False
    try:
        while True:
            try:
                out, err = proc.communicate(stdin, timeout=0.1)  # (a retry resumes the write)
                done = True
                break
            except subprocess.TimeoutExpired:
                if stop is not None and stop.is_set():
                    raise GitError(f"{label} stopped: configsync is shutting down") from None
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    raise GitError(f"{label} timed out after {timeout:g} s (the remote "
                                   "accepted the connection and went silent?)") from None
                if tick is not None and now - ticked >= TICK_SECONDS:
                    ticked = now
                    tick()
    finally:
        if not done:
            _kill_group(proc)
    if proc.returncode not in ok:
        message = _one_line(err) or f"exit status {proc.returncode}"
        raise GitError(f"{label} failed: {message}")
    if warnings is not None:
        warnings.append(err.decode("utf-8", "replace"))
    # git stores names and messages as bytes: one that is not UTF-8 becomes U+FFFD here, never
    # a surrogate that would fail later on its way to Redis
    return proc.returncode, out.decode("utf-8", "replace")


def tracks_files_under(root: Path, folder: Path) -> bool:
    """Whether the git repository at ``root`` tracks any file under ``folder`` (inside it). When
    git cannot tell (no git, not a repository), True: the answer that trusts nothing."""
    try:
        status, out = _run(["ls-files", "-z", "--", str(folder.relative_to(root))], cwd=root,
                           ok=(0, 128))
    except (OSError, ValueError):
        return True
    return status != 0 or bool(out)


def work_tree_top(folder: Path) -> Path | None:
    """The top of the git working tree ``folder`` (an existing directory) is in, or None when
    it is in none: git exits 128 outside any repository, and inside a bare repository or a
    ``.git`` folder (no working tree)."""
    status, out = _run(["rev-parse", "--show-toplevel"], cwd=folder, ok=(0, 128),
                       what="git rev-parse (is git installed?)")
    return Path(out.strip()) if status == 0 and out.strip() else None


def config_value(folder: Path, key: str) -> str | None:
    """``git config KEY`` as seen from ``folder`` (None when unset: git's exit status 1, or
    when git itself cannot run there)."""
    try:
        status, out = _run(["config", "--get", key], cwd=folder, ok=(0, 1))
    except (GitError, OSError):
        return None
    return out.strip() or None if status == 0 else None


def init_repository(folder: Path) -> None:
    """``git init`` in ``folder``: a new, empty repository; nothing is committed."""
    _run(["init", "-q", "."], cwd=folder, what=f"cannot create a git repository in {folder}: "
                                               "git init")


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One ``git ls-tree -r -l`` line: a path (relative to the tree) and its object."""

    mode: str
    sha: str
    size: int
    path: str

    @property
    def is_symlink(self) -> bool:
        return self.mode == SYMLINK_MODE

    @property
    def is_file(self) -> bool:
        return self.mode.startswith("100")


class _BlobReader:
    """One long-lived ``git cat-file --batch``: a request, then its answer, in turn."""

    def __init__(self, git_dir: str, env: Mapping[str, str]) -> None:
        self.git_dir = git_dir
        self.env = {**os.environ, **_ENV, **env}
        self.owner = os.getpid()  # a forked child must not share this process's pipes
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["git", "cat-file", "--batch"], cwd=self.git_dir,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=self.env,
                                start_new_session=True)

    def read(self, sha: str) -> bytes:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(sha.encode() + b"\n")
            stdin.flush()
        except OSError:
            raise GitError(f"git cat-file ended before reading object {sha}") from None
        header = stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            raise GitError(f"git cat-file failed to read object {sha}")
        data = _read_exactly(stdout, int(header[2]))
        stdout.read(1)
        return data

    def read_many(self, shas: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """``(sha, content)`` for each of ``shas``, pipelined: a thread writes every request
        while this one reads the answers (one flush, not one round trip per blob; the thread
        keeps a full pipe from blocking either side)."""
        if len(shas) < 2:
            for sha in shas:
                yield sha, self.read(sha)
            return
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        failed: list[OSError] = []

        def request() -> None:
            try:
                stdin.write(b"".join(sha.encode() + b"\n" for sha in shas))
                stdin.flush()
            except OSError as exc:
                failed.append(exc)

        writer = threading.Thread(target=request, name="configsync-cat-file", daemon=True)
        writer.start()
        answered = 0
        try:
            for sha in shas:
                header = stdout.readline().split()
                if len(header) != 3 or header[1] != b"blob":
                    raise GitError(f"git cat-file failed to read object {sha}")
                data = _read_exactly(stdout, int(header[2]))
                stdout.read(1)
                answered += 1
                yield sha, data
        finally:
            if answered < len(shas):  # an error, or the caller stopped early: answers are
                _kill_group(self.proc)  # still queued, so this process is out of step (the
            writer.join()               # kill also ends a writer blocked on a full pipe)
            if answered < len(shas):
                self.proc = self._start()
        if failed:
            raise GitError("git cat-file ended before reading every object")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise GitError("git cat-file ended in the middle of an object")
    return data


class GitRepo:
    """A local git repository. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str], *, search_parents: bool = True) -> None:
        try:
            self._repo = gitpython.Repo(path, search_parent_directories=search_parents)
        except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError) as exc:
            raise UsageError(f"not a git repository: {os.path.abspath(path)}") from exc
        self.git_dir = Path(self._repo.git_dir)  # per worktree: .git, or .git/worktrees/<name>
        self.bare: bool = self._repo.bare
        # where refs and objects live: the git folder, or a worktree's main one
        self.common_dir = Path(self._repo.common_dir)
        self._reader: _BlobReader | None = None
        # every command's environment: Mirror names its folder (GIT_DIR), see _here
        self._pinned: dict[str, str] = {}
        if self.bare:
            self.top = self.git_dir
            self.prefix = ""
        else:
            self.top = Path(self._repo.working_tree_dir or path)
            prefix = os.path.relpath(Path(path).resolve(), self.top.resolve())
            self.prefix = "" if prefix == "." else Path(prefix).as_posix() + "/"

    def __enter__(self) -> GitRepo:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._repo.close()

    def _here(self, args: Sequence[str], *, env: Mapping[str, str] | None = None,
              **options: Any) -> tuple[int, str]:
        """:func:`_run` in this repository's git folder. A :class:`Mirror` names it in
        ``GIT_DIR`` too, so a mirror that lost its ``HEAD`` (a tmp cleaner) is an error, never
        a repository found above it (the user's own ``.git``, around ``.git/configsync``)."""
        return _run(args, cwd=self.git_dir, env={**self._pinned, **(env or {})}, **options)

    def _git(self, *args: str, ok: Sequence[int] = (0,)) -> str:
        return self._here(args, ok=ok)[1]

    def _status(self, *args: str) -> bool:
        """True for exit status 0, False for 1 (git's "no"); anything else is an error."""
        return self._here(args, ok=(0, 1))[0] == 0

    def resolve(self, ref: str) -> str:
        """The full sha of the commit ``ref`` names."""
        hint = f"unknown git ref: {ref} (is it fetched, and spelled right?)"
        if ref.startswith("-"):
            raise UsageError(hint)
        status, out = self._here(["rev-parse", "--verify", "--quiet", "--end-of-options",
                                  f"{ref}^{{commit}}"], ok=(0, 1))
        if status == 1:
            if not self.has_commits():
                raise UsageError(f"the repository has no commits yet, so there is no {ref} to "
                                 "validate; commit first, or validate the working tree (no "
                                 "--ref) or what is staged (--cached)")
            raise UsageError(hint)
        return out.strip()

    def has_commits(self) -> bool:
        """Whether any branch, tag or HEAD names a commit (a new repository has none)."""
        if self._here(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], ok=(0, 1))[0] == 0:
            return True
        return bool(self._git("for-each-ref", "--count=1", "--format=%(objectname)").strip())

    def has_commit(self, sha: str) -> bool:
        """Whether ``sha`` is a commit here (exit 1: no; any other failure raises)."""
        return self._status("rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}")

    def count_commits(self, base: str | None, head: str) -> int:
        """How many commits ``head`` has that ``base`` lacks (None: all of them), as ``git
        rev-list --count`` counts."""
        span = head if base is None else f"{base}..{head}"
        return int(self._git("rev-list", "--count", span, "--").strip())

    def current_branch(self) -> str | None:
        """The checked-out branch, or None on a detached HEAD (exit 1 of symbolic-ref)."""
        status, out = self._here(["symbolic-ref", "--quiet", "--short", "HEAD"], ok=(0, 1))
        return out.strip() if status == 0 else None

    def is_shallow(self) -> bool:
        """Whether this is a shallow clone (``git clone --depth``): its history is cut short."""
        return self._git("rev-parse", "--is-shallow-repository").strip() == "true"

    # -- writing commits (configsync rollback): plumbing, so nothing is half done -----------

    def dirty_paths(self) -> list[str]:
        """Tracked files changed in the working tree or the index (untracked ones are not
        counted: a commit never takes them). Raises UsageError for a bare repository."""
        if self.bare:
            raise UsageError(f"{self.git_dir} is a bare repository: it has no working tree")
        out = _run(["status", "--porcelain=v1", "-z", "--untracked-files=no"], cwd=self.top)[1]
        return [record[3:] for record in out.split("\0") if len(record) > 3]

    def write_tree(self, base: str, updates: Mapping[str, TreeEntry | None]) -> str:
        """A tree object: ``base``'s tree with ``updates`` (path relative to :attr:`prefix` ->
        the entry to put there, or None to remove it), built in a temporary index so neither
        the working tree nor the real index is touched. Returns its sha."""
        with tempfile.TemporaryDirectory(prefix="configsync-index-") as scratch:
            env = {"GIT_INDEX_FILE": os.path.join(scratch, "index")}
            _run(["read-tree", base], cwd=self.git_dir, env=env)
            info = "".join(
                f"0 {'0' * len(base)}\t{self.prefix}{path}\0" if entry is None
                else f"{entry.mode} {entry.sha}\t{self.prefix}{path}\0"
                for path, entry in sorted(updates.items()))
            _run(["update-index", "-z", "--index-info"], cwd=self.git_dir, env=env,
                 stdin=info.encode())
            return _run(["write-tree"], cwd=self.git_dir, env=env)[1].strip()

    def commit_tree(self, tree: str, parent: str, message: str) -> str:
        """A new commit of ``tree`` on ``parent`` (author and committer from git's config, as
        ``git commit`` takes them); no ref moves. Returns its sha."""
        return _run(["commit-tree", tree, "-p", parent, "-F", "-"], cwd=self.git_dir,
                    stdin=message.encode(), what="git commit-tree (is user.name and "
                    "user.email set? see `git config`)")[1].strip()

    def fast_forward(self, commit: str) -> None:
        """Move the checked-out branch, the index and the working tree to ``commit``, a
        descendant of HEAD (``git merge --ff-only``)."""
        _run(["merge", "--ff-only", "--quiet", commit], cwd=self.top)

    def create_branch(self, name: str, commit: str) -> None:
        """A new branch ``name`` at ``commit``; UsageError when the name is no valid branch
        name or the branch exists. The checkout stays where it is."""
        if name.startswith("-") or _run(["check-ref-format", "--branch", name],
                                        cwd=self.git_dir, ok=(0, 1, 128))[0] != 0:
            raise UsageError(f"{name!r} is not a valid branch name")
        if self._status("rev-parse", "--verify", "--quiet", f"refs/heads/{name}"):
            raise UsageError(f"branch {name} exists already: pick another --branch")
        if self._status("rev-parse", "--verify", "--quiet", "--end-of-options", name):
            raise UsageError(f"{name} names an existing ref (a remote branch or a tag): a "
                             "branch of that name would be ambiguous; pick another --branch")
        self._git("branch", "--", name, commit)

    def upstream(self, branch: str) -> tuple[str, str]:
        """Where ``branch`` pushes: its upstream remote and branch, else ``origin`` and the
        same name."""
        remote = _run(["config", "--get", f"branch.{branch}.remote"], cwd=self.git_dir,
                      ok=(0, 1))[1].strip()
        merge = _run(["config", "--get", f"branch.{branch}.merge"], cwd=self.git_dir,
                     ok=(0, 1))[1].strip()
        if not remote or remote == ".":
            return "origin", branch
        return remote, merge.removeprefix("refs/heads/") or branch

    def push(self, remote: str, commit: str, branch: str, *, timeout: float = 120.0) -> None:
        """``git push REMOTE COMMIT:refs/heads/BRANCH`` (a fast-forward; the user's own
        credential helpers answer), ending within ``timeout`` seconds."""
        _run(["push", "--quiet", "--", remote, f"{commit}:refs/heads/{branch}"],
             cwd=self.top if not self.bare else self.git_dir, timeout=timeout,
             what=f"git push {remote} {branch}")

    def ls_tree(self, commit: str, paths: Sequence[str]) -> list[TreeEntry]:
        """Every entry under ``paths`` (relative to :attr:`prefix`) in ``commit``'s tree."""
        out = self._git("ls-tree", "-r", "-l", "-z", "--full-tree", commit, "--",
                        *(self.prefix + p for p in paths))
        entries = []
        for record in out.split("\0"):
            if not record:
                continue
            meta, _, path = record.partition("\t")
            mode, _kind, sha, size = meta.split()
            entries.append(TreeEntry(mode, sha, int(size) if size.isdigit() else 0,
                                     path[len(self.prefix):]))
        return entries

    def ls_index(self, paths: Sequence[str]) -> list[TreeEntry]:
        """Every entry under ``paths`` (relative to :attr:`prefix`) in the index: what the next
        commit will hold. Raises UsageError for a bare repository or a merge left unresolved."""
        if self.bare:
            raise UsageError(f"{self.git_dir} is a bare repository: it has no index to validate "
                             "(--cached); use --ref")
        out = _run(["ls-files", "--stage", "-z", "--full-name", "--",
                    *(f":(top,literal){self.prefix}{p}" for p in paths)], cwd=self.top)[1]
        staged: list[tuple[str, str, str]] = []
        for record in out.split("\0"):
            if not record:
                continue
            meta, _, path = record.partition("\t")
            mode, sha, stage = meta.split()
            if stage != "0":
                raise UsageError(f"{path} has unresolved merge conflicts in the index; resolve "
                                 "them (git add) before validating what is staged")
            staged.append((mode, sha, path))
        sizes = self._sizes({sha for mode, sha, _ in staged if mode != SUBMODULE_MODE})
        return [TreeEntry(mode, sha, sizes.get(sha, 0), path[len(self.prefix):])
                for mode, sha, path in staged]

    def _sizes(self, shas: Iterable[str]) -> dict[str, int]:
        """Each object's size in bytes, from one ``git cat-file --batch-check``."""
        wanted = sorted(shas)
        if not wanted:
            return {}
        out = self._here(["cat-file", "--batch-check=%(objectname) %(objectsize)"],
                         stdin="".join(sha + "\n" for sha in wanted).encode())[1]
        sizes = {}
        for line in out.splitlines():
            sha, _, size = line.partition(" ")
            if size.isdigit():
                sizes[sha] = int(size)
        return sizes

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Inside, every :meth:`read_blobs` shares one ``git cat-file --batch`` process (a
        walk over thousands of commits starts one, not one a commit)."""
        if self._reader is not None and self._reader.owner == os.getpid():
            yield
            return
        self._reader = _BlobReader(str(self.git_dir), self._pinned)
        try:
            yield
        finally:
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()

    def read_blobs(self, shas: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """``(sha, content)`` for each blob, through ``git cat-file --batch``."""
        wanted = list(shas)
        if not wanted:
            return
        if self._reader is not None and self._reader.owner == os.getpid():
            yield from self._reader.read_many(wanted)
            return
        reader = _BlobReader(str(self.git_dir), self._pinned)  # (a forked child: its own)
        try:
            yield from reader.read_many(wanted)
        finally:
            reader.close()

    def is_ancestor(self, ancestor: str, head: str) -> bool:
        """Whether ``ancestor`` is an ancestor of ``head`` (or it): exit 1 means no; anything
        else (an unknown commit, a killed git, a flaky disk) is a GitError to retry, never a
        "no" that would turn a walk into a force-push (issue 8)."""
        return self._status("merge-base", "--is-ancestor", ancestor, head)

    def first_parent_log(self, since: str | None, head: str, *,
                         limit: int | None = None) -> list[CommitInfo]:
        """The commits after ``since`` up to ``head`` along first parents, oldest first (the
        newest ``limit`` of them)."""
        return [info for info, _ in self.first_parent_changes(since, head, None, limit=limit)]

    def first_parent_changes(self, since: str | None, head: str, paths: Sequence[str] | None,
                             *, limit: int | None = None
                             ) -> list[tuple[CommitInfo, list[Change]]]:
        """Each commit after ``since`` up to ``head`` along first parents, oldest first, with
        what it changed under ``paths`` against its first parent: one ``git log --raw`` for a
        whole walk (None: the commits only)."""
        span = [f"{since}..{head}" if since else head, *([f"-n{limit}"] if limit else [])]
        raw = [] if paths is None else ["--raw", "-z", "--no-renames", "--no-abbrev",
                                        "--diff-merges=first-parent"]
        # No pathspec: it would drop the commits that touch no config file, and every commit
        # is a step (it moves state.seen and counts in revision).
        full = [self.prefix + p for p in paths or ()]
        out = self._git("log", "--first-parent", "--reverse",
                        f"--format={_LOG_FORMAT}", *raw, *span, "--")
        tokens = out.split("\0")  # NUL is the one byte no path, name or subject can hold
        walked = []
        i = 0
        while i < len(tokens):
            sha = tokens[i].lstrip("\n")
            if not sha:
                i += 1
                continue
            if not _SHA.fullmatch(sha) or i + 3 >= len(tokens):
                raise GitError(f"git log printed what configsync cannot read (at {sha[:40]!r})")
            author, date, subject = tokens[i + 1:i + 4]
            i += 4
            while i < len(tokens) and tokens[i] == "":
                i += 1
            changes, i = _raw_changes(tokens, i)
            wanted = [Change(c.status, c.mode, c.sha, c.path[len(self.prefix):]) for c in changes
                      if any(c.path == p or c.path.startswith(p + "/") for p in full)]
            walked.append((CommitInfo(sha, author, date, subject), wanted))
        return walked

    def commit_info(self, sha: str) -> CommitInfo:
        out = self._git("show", "-s", f"--format={_LOG_FORMAT}", sha, "--")
        sha, author, date, subject = out.split("\0")[:4]
        return CommitInfo(sha.strip(), author, date, subject)

    def diff_tree(self, old: str, new: str, paths: Sequence[str]) -> list[Change]:
        """What changed under ``paths`` (relative to :attr:`prefix`, as the result's paths are)
        between two commits' trees (renames as delete + add)."""
        out = self._git("diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", old, new,
                        "--", *(self.prefix + p for p in paths))
        return [Change(c.status, c.mode, c.sha, c.path[len(self.prefix):])
                for c in _changes(out.split("\0"))]

    # -- for `configsync diff`: which commit a change is compared with ------------------------

    def symbolic_target(self, ref: str) -> str | None:
        """The ref that symbolic ref ``ref`` points to (``refs/remotes/origin/HEAD`` ->
        ``refs/remotes/origin/main``); None when ``ref`` is missing or not symbolic (exit 1)."""
        status, out = self._here(["symbolic-ref", "--quiet", ref], ok=(0, 1))
        return out.strip() if status == 0 else None

    def upstream_of(self, branch: str) -> str | None:
        """The full name of local ``branch``'s upstream (``refs/remotes/origin/main``), or None
        when it has none (git prints nothing; asking ``@{upstream}`` would exit 128 for both
        "none" and a real error)."""
        out = self._git("for-each-ref", "--format=%(upstream)", f"refs/heads/{branch}")
        return out.strip() or None

    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of commits ``a`` and ``b``; None when they share no history
        (exit 1: unrelated histories, or a shallow clone cut above it)."""
        status, out = self._here(["merge-base", a, b], ok=(0, 1))
        return out.strip() if status == 0 else None


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """Who made a commit, when, and why (its subject line)."""

    sha: str
    author: str  # "Name <email>"
    committed_at: str  # ISO 8601, the committer date
    message: str


@dataclass(frozen=True, slots=True)
class Change:
    """One ``git diff-tree -r`` entry: a path's new mode and blob (``status`` D: removed)."""

    status: str
    mode: str
    sha: str
    path: str


@dataclass(frozen=True, slots=True)
class RemoteRefs:
    """What ``git ls-remote --symref`` says of a remote: its branches and its default branch
    (the one its ``HEAD`` names; None when HEAD is detached or missing)."""

    default: str | None
    branches: tuple[str, ...]
    tracking: tuple[str, ...] = ()
    """Its remote-tracking branches (``origin/main``): what a clone whose HEAD is detached
    may hold instead of a branch of its own."""
    detached: bool = False
    """Its HEAD names a commit, not a branch."""


_LOG_FORMAT = "%H%x00%an <%ae>%x00%cI%x00%s%x00"

_GIT_DIR_NAMES = frozenset(["HEAD", "config", "description", "hooks", "info", "objects", "refs",
                            "branches", "packed-refs", "FETCH_HEAD", "ORIG_HEAD", "shallow",
                            "logs", "index", "configsync-askpass"])

_ASKPASS = """#!/bin/sh
# configsync: answers git's credential prompts from this process's environment (never argv)
case "$1" in
  Username*) printf '%s\\n' "$CONFIGSYNC_GIT_USERNAME" ;;
  *) printf '%s\\n' "$CONFIGSYNC_GIT_PASSWORD" ;;
esac
"""


def _init_bare(path: Path, *, parents: bool = True) -> None:
    """Make an empty bare repository at ``path`` at once (built beside it, then renamed in), in
    place of whatever is there: a mirror is a cache, refilled by the next fetch. ``parents``:
    make missing folders above it too (not when repairing: a daemon never makes folders
    above its workdir, DESIGN.md invariant 9)."""
    scratch = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        path.parent.mkdir(parents=parents, exist_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
        _run(["init", "-q", "--bare", str(scratch)], cwd=path.parent,
             what=f"cannot create the mirror in {path}: git init")
        if path.exists():
            foreign = sorted(name for name in os.listdir(path)
                             if name not in _GIT_DIR_NAMES and not name.endswith(".lock"))
            if foreign:  # not a half-made mirror: never delete what is not ours
                raise GitError(f"{path} exists and is not a git mirror (it holds "
                               f"{', '.join(foreign[:3])}); pass another --workdir")
            shutil.rmtree(path)
        scratch.rename(path)
    except OSError as exc:
        raise GitError(f"cannot create the mirror in {path}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def split_credentials(url: str, token: str | None = None) -> tuple[str, dict[str, str]]:
    """An http(s) URL without its user and password, and the environment that hands them to
    git through GIT_ASKPASS instead (``token`` replaces the password; the user is then the
    URL's, else ``x-access-token``, GitHub's name for a token). Other URLs are unchanged: an
    ssh user is no secret."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or (
            parts.username is None and parts.password is None and token is None):
        return url, {}
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    user = unquote(parts.username or "") or ("x-access-token" if token is not None else "")
    password = token if token is not None else unquote(parts.password or "")
    return bare, {"CONFIGSYNC_GIT_USERNAME": user, "CONFIGSYNC_GIT_PASSWORD": password}


class Mirror(GitRepo):
    """A bare mirror of one branch of a remote, under the daemon's workdir.

    The remote URL is passed to each fetch and never written to the mirror's config or to
    FETCH_HEAD; credentials in it (or ``token``) reach git through its environment only, never
    argv, disk or logs. Every operation on the remote ends within ``timeout`` seconds, or when
    :attr:`stop` is set.
    """

    def __init__(self, workdir: str | os.PathLike[str], url: str, *, timeout: float = 60.0,
                 token: str | None = None) -> None:
        path = Path(workdir)
        # Never search parent folders: a mirror inside .git/configsync/ that is not (yet) a
        # repository must not be taken for the user's own .git.
        try:
            super().__init__(path, search_parents=False)
        except UsageError:  # missing, or half made by a process killed while making it
            _init_bare(path)
            super().__init__(path, search_parents=False)
        self._pinned = {"GIT_DIR": str(self.git_dir)}
        self.url = url
        self.timeout = timeout
        self.stop: threading.Event | None = None
        self.tick: Callable[[], None] | None = None  # called every few seconds of a fetch
        self._fetch_url, self._credentials = split_credentials(url, token)
        self._env = self._network_env()

    def _network_env(self) -> dict[str, str]:
        """Deadlines every transport honours, and the credentials (if any) for GIT_ASKPASS."""
        seconds = str(max(1, int(self.timeout)))
        env = {"GIT_HTTP_LOW_SPEED_LIMIT": "1000", "GIT_HTTP_LOW_SPEED_TIME": seconds,
               **self._pinned}
        if not os.environ.get("GIT_SSH_COMMAND") and not os.environ.get("GIT_SSH"):
            env["GIT_SSH_COMMAND"] = (f"ssh -o BatchMode=yes -o ConnectTimeout={seconds} "
                                      "-o ServerAliveInterval=15 -o ServerAliveCountMax=3")
        if self._credentials:
            env.update(self._credentials, GIT_ASKPASS=str(self.git_dir / "configsync-askpass"))
        return env

    def _write_askpass(self) -> None:
        """The GIT_ASKPASS script, written again whenever it is missing or changed (the
        workdir is a cache that a tmp cleaner may empty)."""
        askpass = self.git_dir / "configsync-askpass"
        try:
            if askpass.is_file() and askpass.read_text() == _ASKPASS:
                return
            askpass.write_text(_ASKPASS)
            askpass.chmod(0o700)
        except OSError as exc:
            raise GitError(f"cannot write {askpass}: {exc.strerror or exc}") from None

    def intact(self) -> bool:
        """Whether the mirror's folder is still a bare repository (``HEAD``, ``objects/``,
        ``refs/``): a workdir removed or emptied under a running daemon is not."""
        return ((self.git_dir / "HEAD").is_file() and (self.git_dir / "objects").is_dir()
                and (self.git_dir / "refs").is_dir())

    def repair(self, branch: str) -> bool:
        """Make the mirror anew (empty; the next fetch fills it) when it is no longer
        :meth:`intact`, following ``branch``; True when it did. A ``cat-file --batch`` over
        the lost folder is ended. Raises GitError when it cannot (see :func:`_init_bare`)."""
        if self.intact():
            return False
        if self._reader is not None:
            with contextlib.suppress(OSError):
                self._reader.close()
            self._reader = None
        self._repo.close()
        _init_bare(self.git_dir, parents=False)
        self._repo = gitpython.Repo(self.git_dir, search_parent_directories=False)
        self.record_branch(branch)
        return True

    def _remote(self, command: str, options: Sequence[str], refs: Sequence[str], *,
                what: str, hint: str, warnings: list[str] | None = None) -> str:
        """``git COMMAND OPTIONS -- URL REFS``: the one way configsync talks to the remote.
        A failure names the URL without credentials, and says ``hint``."""
        from .logs import redact_text, redact_url

        label = f"git {command} {redact_url(self.url)}{what}"
        # With credentials of our own, no credential helper (`store` writes them to disk in
        # plain text, and answers with an old token before our new one is asked for).
        helpers = ["-c", "credential.helper="] if "GIT_ASKPASS" in self._env else []
        if helpers:
            self._write_askpass()
        try:
            return _run([*helpers, command, *options, "--", self._fetch_url, *refs],
                        cwd=self.git_dir, env=self._env, timeout=self.timeout, stop=self.stop,
                        what=label, tick=self.tick, warnings=warnings)[1]
        except GitError as exc:
            message = redact_text(str(exc))
            if "timed out after" in message or "stopped:" in message:
                raise GitError(message) from None  # (says what happened already)
            if "Authentication failed" in message or "could not read Username" in message:
                hint = "check the credentials: the URL's user and password, or --token-env"
            raise GitError(f"{message} ({hint})") from None

    def fetch(self, branch: str) -> None:
        """Fetch ``branch`` (force: a force-push replaces it), into a mirror made anew first
        when it was lost (:meth:`repair`; logged as ``event=mirror_rebuilt``)."""
        if self.repair(branch):
            from .logs import kv, logger

            logger.warning(kv("mirror_rebuilt", mirror=self.git_dir,
                              reason="the mirror was removed or emptied", branch=branch))
        said: list[str] = []
        self._remote("fetch", ["--quiet", "--no-tags", "--no-write-fetch-head", "--force"],
                     [f"+refs/heads/{branch}:refs/heads/{branch}"], what=f" {branch}",
                     hint="is the remote reachable and the branch name right?", warnings=said)
        if "shallow roots are not allowed" in "".join(said):  # git fetches nothing, exit 0
            from .logs import redact_url

            raise GitError(f"{redact_url(self.url)} is a shallow clone (git clone --depth): "
                           "configsync needs the branch's whole history; run `git fetch "
                           "--unshallow` there, or point --repo at the repository it came from")

    def remote_refs(self) -> RemoteRefs:
        """The remote's branches and default branch, from one ``git ls-remote --symref``."""
        listing = self._remote("ls-remote", ["--symref"],
                               ["HEAD", "refs/heads/*", "refs/remotes/*"], what="",
                               hint="is the remote reachable?")
        default = None
        head = False
        branches, tracking = [], []
        for line in listing.split("\n"):  # not splitlines(): a branch may hold U+2028
            name, _, ref = line.partition("\t")
            if name.startswith("ref: ") and ref == "HEAD":
                default = name.removeprefix("ref: ").removeprefix("refs/heads/")
            elif ref == "HEAD":
                head = True
            elif ref.startswith("refs/heads/"):
                branches.append(ref.removeprefix("refs/heads/"))
            elif ref.startswith("refs/remotes/") and not ref.endswith("/HEAD"):
                tracking.append(ref.removeprefix("refs/remotes/"))
        return RemoteRefs(default if default in branches else None, tuple(sorted(branches)),
                          tuple(sorted(tracking)), head and default is None)

    def recorded_branch(self) -> str | None:
        """The branch this mirror followed last time (its HEAD), if it holds it."""
        status, ref = self._here(["symbolic-ref", "--quiet", "HEAD"], ok=(0, 1))
        branch = ref.strip().removeprefix("refs/heads/")
        if status != 0 or not ref.startswith("refs/heads/"):
            return None
        return branch if self.has_branch(branch) else None

    def record_branch(self, branch: str) -> None:
        """Remember ``branch`` as the one this mirror follows (for a start with no remote)."""
        self._git("symbolic-ref", "HEAD", f"refs/heads/{branch}")

    def head(self, branch: str) -> str:
        status, out = self._here(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
                                 ok=(0, 1))
        if status == 1:
            raise GitError(f"branch {branch} was not fetched: does the remote have it?")
        return out.strip()

    def has_branch(self, branch: str) -> bool:
        return self._status("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_META = re.compile(r"\n?:\d{6} (\d{6}) [0-9a-f]{40,64} ([0-9a-f]{40,64}) ([A-Z])\d*")


def _raw_changes(tokens: Sequence[str], i: int) -> tuple[list[Change], int]:
    """The ``:old_mode mode old_sha sha status`` + path pairs of ``-z`` raw output from
    ``tokens[i]`` on, and where they end. A path is taken as it is, whatever it holds."""
    changes = []
    while i + 1 < len(tokens):
        meta = _META.fullmatch(tokens[i])
        if meta is None:
            break
        mode, sha, status = meta.groups()
        changes.append(Change(status, mode, sha, tokens[i + 1]))
        i += 2
    return changes, i


def _changes(records: Sequence[str]) -> list[Change]:
    return _raw_changes(records, 0)[0]
