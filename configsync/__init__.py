"""configsync: GitOps for AI agent configuration.

Agent configs are YAML in git; ``configsync validate`` checks them with file, line and column.
"""

from .errors import ConfigsyncError, GitError, SchemaImportError, UsageError
from .loader import Document, YamlError, load_yaml
from .model import AgentConfig, Limits, Metadata, RepoSettings, ToolSpec
from .validate import Diagnostic, Report, check_tree

__version__ = "0.1.0"

__all__ = [
    "AgentConfig",
    "ConfigsyncError",
    "Diagnostic",
    "Document",
    "GitError",
    "Limits",
    "Metadata",
    "RepoSettings",
    "Report",
    "SchemaImportError",
    "ToolSpec",
    "UsageError",
    "YamlError",
    "__version__",
    "check_tree",
    "load_yaml",
]
