"""``configsync diff --format markdown``: a diff fit for a pull request comment or
``$GITHUB_STEP_SUMMARY``.

Every config value in it is text from the pull request, so it is escaped (:func:`md_text`): no
value can end a table cell or a line, write HTML, markup, a link, a mention or an issue link,
or close its code block (:func:`md_fence`). The output is kept to what GitHub holds (a comment
65,536 characters, a summary 1 MiB): a line of a prompt diff (or an error, id or label) shows
MD_LINE_CHARS characters, and the whole at most MD_TOTAL_CHARS; past that the agents' sections
are left out (the first that does not fit is cut between rows, its code block closed), the
heading, counts, table and errors are kept, and a closing note says how many agents were left
out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .compare import ADDED, REMOVED
from .diff_cli import (
    FIRST_ERRORS,
    MD_LINE_CHARS,
    PROMPT_FIELD,
    AgentDiff,
    Diff,
    clip,
    diff_lines,
    error_lines,
    json_value,
)
from .logs import one_line
from .messages import plural

__all__ = ["CELL_CHARS", "MD_TOTAL_CHARS", "md_cell", "md_fence", "md_text", "render_markdown"]

DETAILS_LINES = 15
"""A markdown prompt diff longer than this folds into <details>."""
MARKDOWN_DIFF_LINES = 400
"""A markdown prompt diff shows at most this many lines."""
MD_TOTAL_CHARS = 60_000
"""The markdown output's most characters (UTF-16 code units, as GitHub counts them): a pull
request comment holds 65,536 and a job summary 1 MiB. The agents' sections past it are left
out, and a note says how many (``configsync diff`` shows everything)."""
_NOTE_ROOM = 600
"""Characters kept for that note."""
CELL_CHARS = 60
"""A markdown table cell shows at most this many characters of a value."""

def _size(text: str) -> int:
    """``text``'s length as GitHub counts it (UTF-16 code units: an emoji is two)."""
    return len(text.encode("utf-16-le")) // 2


# what starts markup inside a line (emphasis, code, links, images, HTML, entities, GitHub's
# strikethrough, math, mentions and issue links) or ends a table cell; nothing md_text writes
# begins a line, so line-start markup (`-`, `1.`, `>`) cannot arise
_PUNCTUATION = re.compile(r"([\\`*_\[\]<>&|~@#!$])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;",
             # GitHub finds @mentions and #123 issue links in the rendered text, after the
             # backslash escapes are gone (`\@user` still notifies: github/markup#1168); a
             # zero-width space after the sign breaks them, as Renovate does
             "@": "@&#8203;", "#": "#&#8203;"}


def md_text(text: str) -> str:
    """``text`` as markdown that shows it literally: in a table cell, a heading or a list item
    it cannot start markup, a link, HTML, a mention or an issue link, nor end the cell or the
    line."""
    text = " ".join(one_line(text).split("\n"))
    return _PUNCTUATION.sub(lambda m: _ENTITIES.get(m[1], "\\" + m[1]), text)


def md_cell(value: Any, present: bool = True) -> str:
    """A config value (JSON) in a table cell: at most CELL_CHARS characters, then an
    ellipsis; blank when the field is absent on that side."""
    shown = json_value(value) if present else ""
    if len(shown) > CELL_CHARS:
        shown = shown[:CELL_CHARS - 1] + "…"
    return md_text(shown) or " "


def md_fence(body: str, info: str = "") -> str:
    """``body`` in a fenced code block whose fence is longer than any run of backticks in it,
    so no line of the body can close the block."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body.rstrip(chr(10))}\n{fence}"


@dataclass(frozen=True, slots=True)
class _Block:
    """Markdown that a budget cuts between its rows, never inside one: ``head`` (a paragraph,
    a table's header, a fence's opening line), ``rows`` one a line, ``close`` (what ``head``
    opened: the fence), then, when rows are left out, a note counting them (of ``total``,
    in ``noun``), then ``end`` (``</details>``)."""

    head: str
    rows: Sequence[str] = ()
    close: str = ""
    end: str = ""
    noun: str = "lines"
    total: int = 0

    def text(self, shown: int | None = None) -> str:
        count = len(self.rows) if shown is None else shown
        text = "\n".join([self.head, *self.rows[:count], *([self.close] if self.close else [])])
        total = max(self.total, len(self.rows))
        if count < total:
            text += (f"\n\n(the first {count} of {total} {self.noun}; `configsync diff` shows "
                     "them all)")
        return f"{text}\n\n{self.end}" if self.end else text

    def fit(self, room: int) -> tuple[str, int] | None:
        """The most of this block that fits in ``room`` characters and how many rows it
        shows; None when not even its head and a row fit (a paragraph: when it does not fit)."""
        whole = self.text()
        if _size(whole) <= room:
            return whole, len(self.rows)
        best, low, high = None, 1, len(self.rows) - 1
        while low <= high:  # the size grows with the rows shown
            middle = (low + high) // 2
            text = self.text(middle)
            if _size(text) <= room:
                best, low = (text, middle), middle + 1
            else:
                high = middle - 1
        return best


def render_markdown(diff: Diff) -> str:
    """The diff as markdown of at most MD_TOTAL_CHARS characters: the heading, the counts, the
    errors and the table of agents (cut between rows only when it alone is too long) always,
    then each agent's section while the budget lasts (the first one that does not fit is cut
    between rows, its code block closed), then a note of what was left out."""
    top = ["## configsync diff",
           f"Base {md_text(clip(diff.base.label()))} → head "
           f"{md_text(clip(diff.head.label()))}",
           f"**{md_text(diff.summary())}**"]
    errors = []
    for side, found in diff.errors.items():
        if found:
            first = (f" (the first {FIRST_ERRORS}; `configsync validate` shows all)"
                     if len(found) > FIRST_ERRORS else "")
            errors += [f"**{plural(len(found), 'error')} at {side}**{first}:",
                       md_fence("\n".join(map(clip, error_lines(found))), "text")]
    blocks = list(top)
    room = MD_TOTAL_CHARS - _size("\n\n".join(top + errors)) - _NOTE_ROOM

    def add(block: _Block) -> int | None:
        nonlocal room
        got = block.fit(room - 2)  # (2: the blank line before it)
        if got is not None:
            blocks.append(got[0])
            room -= _size(got[0]) + 2
        return None if got is None else got[1]

    in_table = 0
    if diff.agents:
        in_table = add(_Block("| agent | change | why |\n| --- | --- | --- |", [
            f"| {md_text(clip(a.agent_id))} | {a.change} | {md_text(clip(a.why()))} |"
            for a in diff.agents], noun="agents")) or 0
    room_left = in_table == len(diff.agents)
    left_out: list[str] = []
    cut = None
    for agent in diff.agents:
        if not agent.fields and agent.prompt_diff is None:
            continue
        if not room_left:
            left_out.append(agent.agent_id)
            continue
        parts = _md_section(agent)
        whole = "\n\n".join(part.text() for part in parts)
        if _size(whole) + 2 <= room:
            blocks.append(whole)
            room -= _size(whole) + 2
            continue
        room_left = False
        before, saved = len(blocks), room
        for part in parts:
            shown = add(part)
            if shown is None or shown < len(part.rows):
                break
        if len(blocks) - before > 2:  # more than the heading and its line
            cut = agent.agent_id
        else:
            del blocks[before:]
            room = saved
            left_out.append(agent.agent_id)
    blocks += errors
    if in_table < len(diff.agents) or left_out or cut is not None:
        blocks.append(_cut_note(len(diff.agents), in_table, len(left_out), cut))
    return "\n\n".join(blocks) + "\n"


def _cut_note(agents: int, in_table: int, left_out: int, cut: str | None) -> str:
    parts = [] if in_table == agents else [f"the table lists {in_table} of {agents} agents"]
    if left_out:
        parts.append(f"the details of {plural(left_out, 'agent')} are left out")
    if cut is not None:
        parts.append(f"those of {md_text(clip(cut, 100))} are cut short")
    return (f"**Cut to stay under {MD_TOTAL_CHARS:,} characters: {'; '.join(parts)}. Run "
            "`configsync diff` locally to see everything.**")


def _md_section(agent: AgentDiff) -> list[_Block]:
    """An agent's section: its heading, why, field table and prompt diff."""
    parts = [_Block(f"### {md_text(clip(agent.agent_id))} ({agent.change})"),
             _Block(md_text(clip(agent.why())))]
    if agent.fields:
        parts.append(_Block("| field | before | after |\n| --- | --- | --- |", [
            f"| {md_text(clip(f.path))} | {md_cell(f.old, f.kind != ADDED)} | "
            f"{md_cell(f.new, f.kind != REMOVED)} |" for f in agent.fields], noun="fields"))
    if agent.prompt_diff is not None:
        parts.append(_md_prompt_diff(agent.prompt_diff))
    return parts


def _md_prompt_diff(text: str) -> _Block:
    # one_line: a \r is a line break to CommonMark, and ESC has no place in a comment
    lines = diff_lines(text, MD_LINE_CHARS)
    rows = lines[:MARKDOWN_DIFF_LINES]
    longest = max((len(run) for row in rows for run in re.findall(r"`+", row)), default=0)
    fence = "`" * max(3, longest + 1)  # longer than any run inside: no row can close it
    if len(lines) <= DETAILS_LINES:
        return _Block(f"{fence}diff", rows, fence, total=len(lines))
    return _Block(f"<details><summary>{PROMPT_FIELD} diff ({plural(len(lines), 'line')})"
                  f"</summary>\n\n{fence}diff", rows, fence, "</details>", total=len(lines))
