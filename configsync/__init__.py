"""configsync: GitOps for AI agent configuration.

Agent configs are YAML in git; ``configsync validate`` checks them with file, line and column,
``configsync sync`` carries merged commits to Redis, and :class:`Client` / :class:`AsyncClient`
give agent runtimes in-memory, hot-reloading reads.
"""

from typing import TYPE_CHECKING, Any

from .errors import ConfigsyncError, GitError, SchemaImportError, UsageError
from .loader import Document, YamlError, load_yaml
from .model import AgentConfig, Limits, Metadata, RepoSettings, ToolSpec
from .validate import Diagnostic, Report, check_tree

if TYPE_CHECKING:
    from .aio import AsyncClient
    from .client import Client, ClientForkedError, ClientStatus
    from .embedded import embedded_url
    from .holdings import ClientClosedError, Snapshot, UnknownAgentError, VersionNotFoundError

__version__ = "0.1.0.dev0"

__all__ = [
    "AgentConfig",
    "AsyncClient",
    "Client",
    "ClientClosedError",
    "ClientForkedError",
    "ClientStatus",
    "ConfigsyncError",
    "Diagnostic",
    "Document",
    "GitError",
    "Limits",
    "Metadata",
    "RepoSettings",
    "Report",
    "SchemaImportError",
    "Snapshot",
    "ToolSpec",
    "UnknownAgentError",
    "UsageError",
    "VersionNotFoundError",
    "YamlError",
    "__version__",
    "check_tree",
    "embedded_url",
    "load_yaml",
]

# The client side imports redis; the CLI's validate path should not pay for it (PEP 562).
_LAZY = {"AsyncClient": ".aio", "Client": ".client", "ClientStatus": ".client",
         "ClientForkedError": ".client",
         "ClientClosedError": ".holdings", "Snapshot": ".holdings",
         "UnknownAgentError": ".holdings", "VersionNotFoundError": ".holdings",
         "embedded_url": ".embedded"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'configsync' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
