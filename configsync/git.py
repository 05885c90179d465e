"""Every git operation configsync performs; nothing else imports GitPython or runs git.

Failures become :class:`~configsync.errors.GitError` (or :class:`UsageError` for a path that is no
repository or a ref that does not exist) with a hint. Blob contents are read through one pipelined
``git cat-file --batch`` per call, never through the working tree, so a symlink committed to git
is seen as a symlink and never followed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import git as gitpython

from .errors import GitError, UsageError

__all__ = ["GitRepo", "Mirror", "RemoteRefs", "TreeEntry"]

_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}

SYMLINK_MODE = "120000"
SUBMODULE_MODE = "160000"


_GIT_DIR_NAMES = frozenset(["HEAD", "config", "description", "hooks", "info", "objects", "refs",
                            "branches", "packed-refs", "FETCH_HEAD", "ORIG_HEAD", "shallow",
                            "logs", "index"])


def _init_bare(path: Path) -> None:
    """Make an empty bare repository at ``path`` at once (built beside it, then renamed in), in
    place of whatever is there: a mirror is a cache, refilled by the next fetch."""
    scratch = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
        subprocess.run(["git", "init", "-q", "--bare", str(scratch)], check=True,
                       capture_output=True, env={**os.environ, **_ENV})
        if path.exists():
            foreign = sorted(name for name in os.listdir(path)
                             if name not in _GIT_DIR_NAMES and not name.endswith(".lock"))
            if foreign:  # not a half-made mirror: never delete what is not ours
                raise GitError(f"{path} exists and is not a git mirror (it holds "
                               f"{', '.join(foreign[:3])}); pass another --workdir")
            shutil.rmtree(path)
        scratch.rename(path)
    except subprocess.CalledProcessError as exc:
        raise GitError(f"cannot create the mirror in {path}: "
                       f"{exc.stderr.decode(errors='replace').strip()}") from None
    except OSError as exc:
        raise GitError(f"cannot create the mirror in {path}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _stderr(exc: gitpython.GitCommandError) -> str:
    """git's message as one line: its lines joined (git explains over several), blank ones
    dropped (``fatal: ... does not appear to be a git repository fatal: Could not read...``)."""
    text = str(exc.stderr or "").strip().removeprefix("stderr:").strip(" '\n")
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


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


class GitRepo:
    """A local git repository. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str], *, search_parents: bool = True) -> None:
        try:
            self._repo = gitpython.Repo(path, search_parent_directories=search_parents)
        except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError) as exc:
            raise UsageError(f"not a git repository: {os.path.abspath(path)}") from exc
        self.git_dir = Path(self._repo.git_dir)  # per worktree: .git, or .git/worktrees/<name>
        self.bare: bool = self._repo.bare
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
        self._repo.close()

    def _git(self, *args: str) -> str:
        try:
            out: str = self._repo.git.execute(["git", *args], env=_ENV,
                                              strip_newline_in_stdout=False)
        except gitpython.GitCommandError as exc:
            raise GitError(f"git {args[0]} failed: {_stderr(exc) or exc}") from exc
        return out

    def resolve(self, ref: str) -> str:
        """The full sha of the commit ``ref`` names."""
        hint = f"unknown git ref: {ref} (is it fetched, and spelled right?)"
        if ref.startswith("-"):
            raise UsageError(hint)
        try:
            return self._git("rev-parse", "--verify", "--quiet", "--end-of-options",
                             f"{ref}^{{commit}}").strip()
        except GitError as exc:
            raise UsageError(hint) from exc

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

    def read_blobs(self, shas: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """``(sha, content)`` for each blob, through one pipelined ``git cat-file --batch``."""
        wanted = list(shas)
        if not wanted:
            return
        proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=self._repo.git_dir,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env={**os.environ, **_ENV})
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout

        def feed() -> None:
            try:
                stdin.write("".join(sha + "\n" for sha in wanted).encode())
                stdin.close()
            except OSError:  # git died; the reader reports it
                pass

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        try:
            for sha in wanted:
                header = stdout.readline().split()
                if len(header) != 3:
                    raise GitError(f"git cat-file failed to read object {sha}")
                size = int(header[2])
                data = stdout.read(size)
                stdout.read(1)
                yield sha, data
        finally:
            writer.join()
            stdout.close()
            proc.wait()


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


_LOG_FORMAT = "%H%x00%an <%ae>%x00%cI%x00%s%x00"


class Mirror(GitRepo):
    """A bare mirror of one branch of a remote, under the daemon's workdir.

    The remote URL is passed to each fetch and never written to the mirror's config or to
    FETCH_HEAD, so credentials in it are never stored; errors and logs carry it redacted.
    """

    def __init__(self, workdir: str | os.PathLike[str], url: str) -> None:
        path = Path(workdir)
        # Never search parent folders: a mirror inside .git/configsync/ that is not (yet) a
        # repository must not be taken for the user's own .git.
        try:
            super().__init__(path, search_parents=False)
        except UsageError:  # missing, or half made by a process killed while making it
            _init_bare(path)
            super().__init__(path, search_parents=False)
        self.url = url

    def _remote(self, command: str, options: Sequence[str], refs: Sequence[str], *,
                what: str, hint: str) -> str:
        """``git COMMAND OPTIONS -- URL REFS``: the one way configsync talks to the remote.
        A failure names the URL without credentials, and says ``hint``."""
        from .logs import redact_text, redact_url

        try:
            out: str = self._repo.git.execute(["git", command, *options, "--", self.url, *refs],
                                              env=_ENV)
        except gitpython.GitCommandError as exc:
            raise GitError(f"git {command} {redact_url(self.url)}{what} failed: "
                           f"{redact_text(_stderr(exc)) or 'no output'} ({hint})") from None
        return out

    def fetch(self, branch: str) -> None:
        """Fetch ``branch`` (force: a force-push replaces it)."""
        self._remote("fetch", ["--quiet", "--no-tags", "--no-write-fetch-head", "--force"],
                     [f"+refs/heads/{branch}:refs/heads/{branch}"], what=f" {branch}",
                     hint="is the remote reachable and the branch name right?")

    def remote_refs(self) -> RemoteRefs:
        """The remote's branches and default branch, from one ``git ls-remote --symref``."""
        listing = self._remote("ls-remote", ["--symref"], ["HEAD", "refs/heads/*"], what="",
                               hint="is the remote reachable?")
        default = None
        branches = []
        for line in listing.split("\n"):  # not splitlines(): a branch may hold U+2028
            name, _, ref = line.partition("\t")
            if name.startswith("ref: ") and ref == "HEAD":
                default = name.removeprefix("ref: ").removeprefix("refs/heads/")
            elif ref.startswith("refs/heads/"):
                branches.append(ref.removeprefix("refs/heads/"))
        return RemoteRefs(default if default in branches else None, tuple(sorted(branches)))

    def recorded_branch(self) -> str | None:
        """The branch this mirror followed last time (its HEAD), if it holds it."""
        try:
            ref = self._git("symbolic-ref", "--quiet", "HEAD").strip()
        except GitError:
            return None
        branch = ref.removeprefix("refs/heads/")
        return branch if ref.startswith("refs/heads/") and self.has_branch(branch) else None

    def record_branch(self, branch: str) -> None:
        """Remember ``branch`` as the one this mirror follows (for a start with no remote)."""
        self._git("symbolic-ref", "HEAD", f"refs/heads/{branch}")

    def head(self, branch: str) -> str:
        try:
            return self._git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}").strip()
        except GitError:
            raise GitError(f"branch {branch} was not fetched: does the remote have it?") from None

    def has_branch(self, branch: str) -> bool:
        try:
            self.head(branch)
        except GitError:
            return False
        return True

    def has_commit(self, sha: str) -> bool:
        try:
            self._git("cat-file", "-e", f"{sha}^{{commit}}")
        except GitError:
            return False
        return True

    def is_ancestor(self, ancestor: str, head: str) -> bool:
        """False also when ``ancestor`` is not in this repository (exit 128, not 1)."""
        try:
            self._git("merge-base", "--is-ancestor", ancestor, head)
        except GitError:
            return False
        return True

    def first_parent_log(self, since: str | None, head: str) -> list[CommitInfo]:
        """The commits after ``since`` up to ``head`` along first parents, oldest first."""
        span = f"{since}..{head}" if since else head
        out = self._git("log", "--first-parent", "--reverse", f"--format={_LOG_FORMAT}", span,
                        "--")
        fields = out.strip("\n").split("\0")
        commits = []
        for i in range(0, len(fields) - 4, 4):
            sha, author, date, subject = (f.strip("\n") for f in fields[i:i + 4])
            commits.append(CommitInfo(sha, author, date, subject))
        return commits

    def commit_info(self, sha: str) -> CommitInfo:
        out = self._git("show", "-s", f"--format={_LOG_FORMAT}", sha, "--")
        sha, author, date, subject = out.split("\0")[:4]
        return CommitInfo(sha.strip(), author, date, subject)

    def diff_tree(self, old: str, new: str, paths: Sequence[str]) -> list[Change]:
        """What changed under ``paths`` between two commits' trees (renames as delete + add)."""
        out = self._git("diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", old, new,
                        "--", *paths)
        records = out.split("\0")
        changes = []
        for i in range(0, len(records) - 1, 2):
            meta, path = records[i], records[i + 1]
            _old_mode, mode, _old_sha, sha, status = meta.lstrip(":").split()
            changes.append(Change(status[0], mode, sha, path))
        return changes
