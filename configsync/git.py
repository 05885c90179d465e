"""Every git operation configsync performs; nothing else imports GitPython or runs git.

Failures become :class:`~configsync.errors.GitError` (or :class:`UsageError` for a path that is no
repository or a ref that does not exist) with a hint. Blob contents are read through one pipelined
``git cat-file --batch`` per call, never through the working tree, so a symlink committed to git
is seen as a symlink and never followed.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import git as gitpython

from .errors import GitError, UsageError

__all__ = ["GitRepo", "TreeEntry"]

_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}

SYMLINK_MODE = "120000"
SUBMODULE_MODE = "160000"


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

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._repo = gitpython.Repo(path, search_parent_directories=True)
        except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError) as exc:
            raise UsageError(f"not a git repository: {path}") from exc
        if self._repo.bare:
            self.top = Path(self._repo.git_dir)
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
            stderr = (exc.stderr or "").strip().removeprefix("stderr:").strip(" '\n")
            raise GitError(f"git {args[0]} failed: {stderr or exc}") from exc
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
