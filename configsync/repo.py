"""A config repository's files, from a folder, a git commit or git's index; where it begins.

A :class:`Source` lists the files under ``agents/`` and ``prompts/`` plus ``configsync.yaml``, says
which are symlinks (never followed: a symlink is an error, wherever it points) and reads bytes. A
folder source needs no git at all; a :class:`GitSource` reads blobs from the object database, and
an :class:`IndexSource` what is staged (the next commit). :func:`find_root` finds the folder that
holds ``configsync.yaml`` as git finds ``.git``: in the folder and then its parents.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import UsageError
from .loader import Document

if TYPE_CHECKING:  # GitPython costs 35 ms to import; a working-tree check never needs it
    from .git import GitRepo

__all__ = [
    "AGENTS_DIR",
    "AGENT_SUFFIXES",
    "ATTRIBUTES_FILE",
    "CONFIG_PATHS",
    "LFS_POINTER",
    "PROMPTS_DIR",
    "SETTINGS_FILE",
    "Entry",
    "FolderSource",
    "GitSource",
    "IndexSource",
    "Root",
    "Source",
    "agent_id_for",
    "deep_merge",
    "find_root",
    "has_path",
    "is_config_path",
    "open_source",
    "submodule_paths",
]

SETTINGS_FILE = "configsync.yaml"
AGENTS_DIR = "agents"
PROMPTS_DIR = "prompts"
ATTRIBUTES_FILE = ".gitattributes"
CONFIG_PATHS = (SETTINGS_FILE, ATTRIBUTES_FILE, AGENTS_DIR, PROMPTS_DIR)
"""Everything in a repository that the config tree is made of (the rest is never read)."""
AGENT_SUFFIXES = (".yaml", ".yml")
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
"""How a Git LFS pointer file begins (what git stores for a file in LFS)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A path in the config tree (POSIX, relative to the repository root)."""

    path: str
    size: int
    kind: str  # "file", "symlink", "submodule" or "other"
    key: str  # how the source finds the content again (a blob sha, or the path)


class Source(Protocol):
    """Where a config tree comes from."""

    def entries(self) -> list[Entry]:
        """``configsync.yaml`` (when present) and everything under ``agents/`` and ``prompts/``."""

    def read(self, entries: Sequence[Entry]) -> Iterator[tuple[Entry, bytes]]:
        """The content of each regular file in ``entries``."""


class FolderSource:
    """A config tree in a plain folder (a working tree): no git needed."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.submodules: set[str] = set()

    def entries(self) -> list[Entry]:
        found: list[Entry] = []
        root = os.fspath(self.root)
        self.submodules = self._submodules(root)
        for name in CONFIG_PATHS:
            try:
                info = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                self._walk(os.path.join(root, name), name, found)
            else:
                found.append(Entry(name, info.st_size, _kind(info.st_mode), name))
        listed = {e.path for e in found}
        for path in sorted(self.submodules - listed):  # not initialised: no folder, or empty
            if path.startswith((AGENTS_DIR + "/", PROMPTS_DIR + "/")):
                found = [e for e in found if not e.path.startswith(path + "/")]
                found.append(Entry(path, 0, "submodule", path))
        return found

    @staticmethod
    def _submodules(root: str) -> set[str]:
        """Submodule paths from ``.gitmodules``: git stores those folders as pointers, so they
        are submodules here too, initialised (a ``.git`` inside) or not (an empty folder)."""
        try:
            with open(os.path.join(root, ".gitmodules"), "rb") as handle:
                return set(submodule_paths(handle.read(1 << 20).decode("utf-8", "replace")))
        except OSError:
            return set()

    def _walk(self, folder: str, rel: str, found: list[Entry]) -> None:
        with os.scandir(folder) as listing:
            children = sorted(listing, key=lambda e: e.name)
        for child in children:
            path = f"{rel}/{child.name}"
            if child.is_dir(follow_symlinks=False):
                if os.path.lexists(os.path.join(child.path, ".git")) or path in self.submodules:
                    # a submodule's (or a nested repository's) files are not this
                    # repository's: git stores only a pointer, so --ref and sync see none
                    found.append(Entry(path, 0, "submodule", path))
                    continue
                self._walk(child.path, path, found)
            else:
                info = child.stat(follow_symlinks=False)
                found.append(Entry(path, info.st_size, _kind(info.st_mode), path))

    def read(self, entries: Sequence[Entry]) -> Iterator[tuple[Entry, bytes]]:
        root = os.fspath(self.root)
        for entry in entries:
            # O_NOFOLLOW: a file swapped for a symlink after listing is still not followed.
            fd = os.open(os.path.join(root, entry.key), _READ_FLAGS)
            try:
                chunks = [os.read(fd, entry.size + 1)]
                while chunks[-1]:
                    chunks.append(os.read(fd, 1 << 20))
            finally:
                os.close(fd)
            yield entry, b"".join(chunks)


def _kind(mode: int) -> str:
    return "symlink" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else "other"


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)


class GitSource:
    """A config tree as committed: blobs from git's object database, never the working tree."""

    def __init__(self, repo: GitRepo, commit: str,
                 by_path: dict[str, Entry] | None = None) -> None:
        self.repo = repo
        self.commit = commit
        self.by_path = by_path  # known entries (patched from a diff): no listing needed

    def entries(self) -> list[Entry]:
        if self.by_path is not None:
            return list(self.by_path.values())
        return [
            Entry(e.path, e.size, git_kind(e.mode), e.sha)
            for e in self.repo.ls_tree(self.commit, list(CONFIG_PATHS))
        ]

    def read(self, entries: Sequence[Entry]) -> Iterator[tuple[Entry, bytes]]:
        return _read_blobs(self.repo, entries)


def _read_blobs(repo: GitRepo, entries: Sequence[Entry]) -> Iterator[tuple[Entry, bytes]]:
    by_sha: dict[str, list[Entry]] = {}
    for entry in entries:
        by_sha.setdefault(entry.key, []).append(entry)
    for sha, data in repo.read_blobs(by_sha):
        for entry in by_sha[sha]:
            yield entry, data


class IndexSource:
    """A config tree as staged: git's index (what the next commit holds), never the working
    tree, so an untracked or unstaged file is not seen."""

    def __init__(self, repo: GitRepo) -> None:
        self.repo = repo

    def entries(self) -> list[Entry]:
        return [
            Entry(e.path, e.size, git_kind(e.mode), e.sha)
            for e in self.repo.ls_index(list(CONFIG_PATHS))
        ]

    def read(self, entries: Sequence[Entry]) -> Iterator[tuple[Entry, bytes]]:
        return _read_blobs(self.repo, entries)


def git_kind(mode: str) -> str:
    """An Entry kind for a git tree mode."""
    if mode.startswith("100"):
        return "file"
    return {"120000": "symlink", "160000": "submodule"}.get(mode, "other")


def submodule_paths(text: str) -> list[str]:
    """The ``path = ...`` of each submodule in a ``.gitmodules`` file."""
    found = []
    for line in text.splitlines():
        name, _, value = line.strip().partition("=")
        if name.strip() == "path" and value.strip():
            found.append(value.strip().strip('"').strip("/"))
    return found


def agent_id_for(path: str) -> str | None:
    """``agents/billing/refunds.yaml`` → ``billing/refunds``; None for a non-agent path."""
    if not path.startswith(AGENTS_DIR + "/"):
        return None
    for suffix in AGENT_SUFFIXES:
        if path.endswith(suffix):
            return path[len(AGENTS_DIR) + 1:-len(suffix)]
    return None


def deep_merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in child.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def has_path(data: Any, path: Sequence[str | int]) -> bool:
    """Whether ``data`` holds a value at ``path`` (mapping keys and list indexes)."""
    for part in path:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return False
    return True


@dataclass(frozen=True, slots=True)
class AgentFile:
    """A loaded agent file."""

    agent_id: str
    path: str
    doc: Document


def is_config_path(path: str) -> bool:
    """Whether ``path`` (POSIX, relative to the config root) is part of the config tree."""
    first = path.split("/", 1)[0]
    return path in (SETTINGS_FILE, ATTRIBUTES_FILE) or (
        first in (AGENTS_DIR, PROMPTS_DIR) and path != first)


@dataclass(frozen=True, slots=True)
class Root:
    """Where a config tree begins: ``folder`` holds ``configsync.yaml`` (or should); ``top`` is
    the git repository's top folder when there is one, else ``folder``."""

    folder: Path
    top: Path
    found: bool  # whether configsync.yaml was found (else ``folder`` is where it belongs)

    def from_top(self, path: str) -> str:
        """``path`` (relative to ``folder``) relative to ``top``: what GitHub calls a file."""
        rel = Path(os.path.relpath(self.folder, self.top)).as_posix()
        return path if rel == "." else f"{rel}/{path}"


def _is_git_top(folder: str) -> bool:
    return os.path.lexists(os.path.join(folder, ".git")) or (  # a work tree, or a bare repo
        os.path.isfile(os.path.join(folder, "HEAD"))
        and os.path.isdir(os.path.join(folder, "objects")))


def _git_top(folder: str) -> str | None:
    """The nearest of ``folder`` and its parents that is a git repository's top."""
    while not _is_git_top(folder):
        if os.path.dirname(folder) == folder:
            return None
        folder = os.path.dirname(folder)
    return folder


def find_root(start: str | os.PathLike[str]) -> Root:
    """The folder holding ``configsync.yaml``: ``start`` or the nearest of its parents, as git
    finds ``.git``. The search stops at the git repository's top (a folder holding ``.git``, or a
    bare repository) and at the filesystem root, and walks the path as written: from a symlinked
    folder it goes up to the folder that holds the link, never to where the link points. When
    none is found, the repository's top (else ``start``) is where it belongs."""
    start = os.path.abspath(start)  # lexical: no symlink is resolved
    folder = start
    while not os.path.lexists(os.path.join(folder, SETTINGS_FILE)):
        if _is_git_top(folder) or os.path.dirname(folder) == folder:
            where = folder if _is_git_top(folder) else start
            return Root(Path(where), Path(where), False)
        folder = os.path.dirname(folder)
    return Root(Path(folder), Path(_git_top(folder) or folder), True)


@contextmanager
def open_source(path: str | os.PathLike[str], ref: str | None = None, *,
                cached: bool = False) -> Iterator[Source]:
    """The config tree at ``path`` (its root folder): the working tree; with ``ref`` that
    commit's tree; with ``cached`` git's index (what is staged).

    Raises :class:`UsageError` for a missing path, a path that is no git repository (with
    ``ref`` or ``cached``), an unknown ref and a repository with no commits yet.
    """
    root = Path(path)
    if root.is_file():
        raise UsageError(f"{path} is a file: the config tree begins at a folder (the one that "
                         "holds configsync.yaml)")
    if not root.is_dir():
        raise UsageError(f"no such directory: {path}")
    if ref is None and not cached:
        yield FolderSource(root)
        return
    from .git import GitRepo

    with GitRepo(root) as repo:
        yield IndexSource(repo) if ref is None else GitSource(repo, repo.resolve(ref))
