"""diff_markdown.py: the markdown renderer's escaping and the caps that keep it within what
GitHub holds (the end-to-end markdown cases are in test_diff_cli.py)."""

from __future__ import annotations

import re

from configsync.compare import FieldChange
from configsync.diff_cli import AgentDiff, Diff, Side, render
from configsync.diff_markdown import md_cell, md_fence, md_text
from configsync.validate import Diagnostic

from .test_diff_cli import closed_fences


def test_markdown_helpers() -> None:
    assert md_text("a|b\nc <i>&") == "a\\|b\\\\nc &lt;i&gt;&amp;"
    # GitHub still links `\@user` and `\#1` (github/markup#1168): a zero-width space breaks them
    assert md_text("@org/team owner/repo#12 &#8203;") == (
        "@&#8203;org/team owner/repo#&#8203;12 &amp;#&#8203;8203;")
    assert md_cell("x" * 100) == '"' + "x" * 58 + "…"
    assert md_cell(None) == "null"
    assert md_cell(None, present=False) == " "
    assert md_fence("a ```` b") == "`````\na ```` b\n`````"
    assert md_fence("plain", "diff") == "```diff\nplain\n```"



def made_diff(agents: list[AgentDiff], errors: int = 0) -> Diff:
    error = Diagnostic("agents/bad.yaml", 1, 1, "error", "model: " + "z" * 5000)
    return Diff(Side("a" * 40, "HEAD~1", "HEAD~1, given"), Side(None, None, "working tree"),
                agents, 0, {"base": [], "head": [error] * errors})


def test_markdown_cuts_a_long_table_between_rows_and_keeps_the_errors() -> None:
    out = render(made_diff([AgentDiff(f"agent-{i:04}", "added", []) for i in range(3000)],
                           errors=7), "markdown")
    assert len(out) <= 60_000 and closed_fences(out)
    shown = out.count(" | added | new file |\n")
    assert 1000 < shown < 3000
    assert f"| agent-{shown - 1:04} | added | new file |\n\n(the first {shown} of 3000 agents; " \
           "`configsync diff` shows them all)\n\n**7 errors at head** (the first 5" in out
    assert f"\nagents/bad.yaml:1:1: model: {'z' * 972}… (4,028 more characters)\n" in out
    assert out.endswith(f"```\n\n**Cut to stay under 60,000 characters: the table lists {shown} "
                        "of 3000 agents. Run `configsync diff` locally to see everything.**\n")


def test_markdown_cuts_a_field_table_between_rows() -> None:
    fields = [FieldChange(f"metadata.labels.k{i}", "added", None, "v" * 50)
              for i in range(3000)]
    agents = [AgentDiff("big", "changed", [], fields), AgentDiff("next", "changed", [], fields)]
    out = render(made_diff(agents), "markdown")
    assert len(out) <= 60_000 and closed_fences(out)
    assert "### big (changed)" in out and "### next" not in out
    assert re.search(r"\| metadata.labels.k\d+ \|   \| \"v+\" \|\n\n\(the first \d+ of 3000 "
                     r"fields; `configsync diff` shows them all\)\n\n\*\*Cut to stay under "
                     r"60,000 characters: the details of 1 agent are left out; those of big are "
                     r"cut short\.", out)
    text = render(made_diff(agents), "text")  # complete
    assert text.count("  + metadata.labels.k") == 6000
