"""configsync's exceptions.

    ConfigsyncError            anything configsync reports to a user (exit 1 at the CLI)
    ├── UsageError             the command was asked something impossible (exit 2)
    ├── GitError               a git operation failed; the message carries a hint
    ├── SchemaImportError      ``schema:`` in configsync.yaml names nothing importable
    └── CorruptDataError       what Redis holds is not what configsync writes (also a ValueError)

Foreign exceptions are converted where they enter configsync (``raise ... from exc``), so the CLI
catches one tree and never shows a user a traceback for their own mistake.
"""

from __future__ import annotations


class ConfigsyncError(Exception):
    """Base class for every error configsync reports to a user."""


class UsageError(ConfigsyncError):
    """Bad arguments: no such path, not a git repository, unknown ref."""


class GitError(ConfigsyncError):
    """A git command failed."""


class SchemaImportError(ConfigsyncError):
    """The repository's ``schema:`` setting could not be imported."""


class CorruptDataError(ConfigsyncError, ValueError):
    """A value read from Redis is not what configsync writes there: not JSON, the wrong shape
    or types, a checksum that does not match its config (issue 17 item 2). The message names
    the key or field and what is wrong, on one line."""
