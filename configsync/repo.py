"""A config repository's files, from a folder or from a git commit, and ``extends`` resolution.

A :class:`Source` lists the files under ``agents/`` and ``prompts/`` plus ``configsync.yaml``, says
which are symlinks (never followed: a symlink is an error, wherever it points) and reads bytes. A
folder source needs no git at all; a :class:`GitSource` reads blobs from the object database.
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
    "Source",
    "agent_id_for",
    "deep_merge",
    "has_path",
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
        by_sha: dict[str, list[Entry]] = {}
        for entry in entries:
            by_sha.setdefault(entry.key, []).append(entry)
        for sha, data in self.repo.read_blobs(by_sha):
            for entry in by_sha[sha]:
                yield entry, data


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


@contextmanager
def open_source(path: str | os.PathLike[str], ref: str | None = None) -> Iterator[Source]:
    """The config tree at ``path``: its working tree, or with ``ref`` that commit's tree.

    Raises :class:`UsageError` for a missing path, a path that is no git repository (with
    ``ref``) and an unknown ref.
    """
    root = Path(path)
    if root.is_file():
        raise UsageError(f"{path} is a file: validate takes the repository's folder (the one "
                         "that holds configsync.yaml), and checks every file in it")
    if not root.is_dir():
        raise UsageError(f"no such directory: {path}")
    if ref is None:
        yield FolderSource(root)
        return
    from .git import GitRepo

    with GitRepo(root) as repo:
        yield GitSource(repo, repo.resolve(ref))
