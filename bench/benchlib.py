"""Shared by the benchmarks: generated agent repositories in a bare remote and a clone."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench Author", "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench Author", "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
}


def _load_generator() -> Callable[[Path, int, int], list[Path]]:
    """``generate`` from bench/validate.py (the same agent files as that benchmark)."""
    spec = importlib.util.spec_from_file_location(
        "bench_validate", Path(__file__).with_name("validate.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generate: Callable[[Path, int, int], list[Path]] = module.generate
    return generate


generate = _load_generator()


# -- git ---------------------------------------------------------------------------------------

def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=cwd, check=True,
                          capture_output=True, text=True, env={**os.environ, **GIT_ENV},
                          timeout=300)
    return done.stdout.strip()


class Repo:
    """A bare remote and a working clone that commits and pushes to it."""

    def __init__(self, base: Path, agents: int, seed: int) -> None:
        self.remote = base / "remote.git"
        self.clone = base / "clone"
        self.remote.mkdir(parents=True)
        git(self.remote, "init", "-q", "--bare", "-b", "main")
        self.clone.mkdir()
        git(self.clone, "init", "-q", "-b", "main")
        git(self.clone, "remote", "add", "origin", str(self.remote))
        self.files = generate(self.clone, agents, seed)
        git(self.clone, "add", "-A")
        git(self.clone, "commit", "-q", "-m", f"{agents} agents")
        self.push()
        self.counter = 0

    def agent_id(self, index: int) -> str:
        path = self.files[index % len(self.files)]
        return path.relative_to(self.clone / "agents").with_suffix("").as_posix()

    def commit_change(self, index: int) -> tuple[str, str]:
        """Give one agent a new max_tokens and commit (no push); its id and the new commit."""
        self.counter += 1
        path = self.files[index % len(self.files)]
        text = path.read_text()
        path.write_text(re.sub(r"(?m)^max_tokens: \d+$", f"max_tokens: {10_000 + self.counter}",
                               text, count=1))
        git(self.clone, "commit", "-q", "-am", f"bench change {self.counter}")
        return self.agent_id(index), git(self.clone, "rev-parse", "HEAD")

    def push(self) -> None:
        git(self.clone, "push", "-q", "origin", "main")

    def change(self, index: int) -> tuple[str, str]:
        """Give one agent a new max_tokens, commit and push; its id and the new commit."""
        agent_id, commit = self.commit_change(index)
        self.push()
        return agent_id, commit


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a daemon subprocess (it finishes the commit in hand); SIGKILL after 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def show_log_tail(log_path: Path, lines: int = 20) -> None:
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    print("daemon log (last lines):\n" + "\n".join(tail), file=sys.stderr)


def history_repo(path: Path, agents: int, commits: int) -> str:
    """A bare repository whose main branch has ``commits`` commits: the first adds
    configsync.yaml and ``agents`` agents, each later one changes one agent. Written with one
    ``git fast-import`` (seconds, where a process per commit would take minutes)."""
    git(path.parent, "init", "-q", "--bare", "-b", "main", str(path))
    out: list[bytes] = []

    def blob(text: str) -> None:
        data = text.encode()
        out.append(b"data %d\n%s\n" % (len(data), data))

    when = 1_704_067_200
    for n in range(1, commits + 1):
        out.append(b"commit refs/heads/main\nmark :%d\n" % n)
        out.append(b"author Bench Author <bench@example.com> %d +0000\n" % (when + n))
        out.append(b"committer Bench Author <bench@example.com> %d +0000\n" % (when + n))
        blob(f"change {n}")
        if n > 1:
            out.append(b"from :%d\n" % (n - 1))
        touched = range(agents) if n == 1 else [n % agents]
        if n == 1:
            out.append(b"M 100644 inline configsync.yaml\n")
            blob("namespace: bench\n")
        for a in touched:
            out.append(b"M 100644 inline agents/a%05d.yaml\n" % a)
            blob(f"system_prompt: You are agent {a}, in its version {n}.\nmodel: gpt-4o\n"
                 f"max_tokens: {100 + n}\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=b"".join(out),
                   check=True, env={**os.environ, **GIT_ENV}, timeout=600)
    return git(path, "rev-parse", "refs/heads/main")
