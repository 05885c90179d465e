"""Fixtures that make real things: config trees on disk and real git repositories.

Every test runs with a clean environment: HOME in a temp folder (nothing is written to ~), no
CONFIGSYNC_* or GIT_* variables from the developer's shell, and a pinned git author, committer and
date, so commits are reproducible.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from configsync.embedded import RedisServer

FIXED_DATE = "2026-01-02T03:04:05+00:00"

SETTINGS = """\
namespace: test
models: [gpt-4o, gpt-4o-mini]
tools:
  search: {description: Web search}
  calculator: {description: Arithmetic}
"""

SUPPORT = """\
system_prompt: You help customers.
model: gpt-4o
temperature: 0.3
max_tokens: 500
tools: [search]
guardrail_threshold: 0.7
"""


@pytest.fixture(autouse=True)
def clean_environ(tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CONFIGSYNC_", "GIT_", "XDG_")):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Ada Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "ada@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Cy Committer")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "cy@example.com")
    monkeypatch.setenv("GIT_AUTHOR_DATE", FIXED_DATE)
    monkeypatch.setenv("GIT_COMMITTER_DATE", FIXED_DATE)


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """The CLI points configsync's logger at the stderr of its moment; undo that after a test."""
    yield
    log = logging.getLogger("configsync")
    log.handlers.clear()
    log.propagate = True
    log.setLevel(logging.NOTSET)


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write ``files`` (path → text, dedented, or bytes) under ``root``."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content), encoding="utf-8")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A valid config tree: configsync.yaml and agents/support.yaml."""
    return write_tree(tmp_path / "repo", {"configsync.yaml": SETTINGS,
                                          "agents/support.yaml": SUPPORT})


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


class GitTree:
    """A real git repository in a temp folder that tests edit and commit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "-q", "-b", "main")

    def write(self, files: Mapping[str, str | bytes]) -> None:
        write_tree(self.root, files)

    def commit(self, message: str = "change") -> str:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.root, "rev-parse", "HEAD").strip()


@pytest.fixture
def git_tree(tree: Path) -> Iterator[GitTree]:
    repo = GitTree(tree)
    repo.commit("initial configs")
    yield repo


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free port (never the machine's 6379), killed at the end."""
    server = RedisServer(tmp_path / "redis", persist=False).start()
    assert server.port != 6379
    yield server
    server.kill()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


class Remote:
    """A bare "remote" repository and a clone that commits and pushes, as a user would."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        self.url = str(root / "remote.git")
        self.work = root / "work"
        self.branch = branch
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "-q", "--bare", "-b", branch, self.url)
        git(root, "clone", "-q", self.url, str(self.work))
        git(self.work, "checkout", "-q", "-B", branch)

    def write(self, files: Mapping[str, str | bytes]) -> None:
        write_tree(self.work, files)

    def delete(self, *paths: str) -> None:
        git(self.work, "rm", "-q", "-r", *paths)

    def commit(self, message: str = "change", files: Mapping[str, str | bytes] | None = None,
               **env: str) -> str:
        if files:
            self.write(files)
        git(self.work, "add", "-A")
        subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", message], cwd=self.work,
                       check=True, capture_output=True, env={**os.environ, **env})
        return git(self.work, "rev-parse", "HEAD").strip()

    def push(self, *, force: bool = False) -> None:
        git(self.work, "push", "-q", *(["--force"] if force else []), "origin",
            f"HEAD:{self.branch}")

    def commit_push(self, message: str = "change",
                    files: Mapping[str, str | bytes] | None = None, **env: str) -> str:
        sha = self.commit(message, files, **env)
        self.push()
        return sha


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """A remote whose main branch holds a valid config repo with agents a and b."""
    repo = Remote(tmp_path / "git")
    repo.commit_push("initial configs", {
        "configsync.yaml": SETTINGS,
        "agents/a.yaml": "system_prompt: You are A.\nmodel: gpt-4o\n",
        "agents/b.yaml": "system_prompt: You are B.\nmodel: gpt-4o-mini\ntools: [search]\n",
    })
    return repo


def wait_until(condition: Callable[[], object], timeout: float = 30.0,
               interval: float = 0.02) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def spawn_daemon(remote: Remote, redis_url: str, namespace: str, workdir: Path, *,
                 interval: float = 0.05, extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """``configsync sync`` as a real process, logging to workdir/daemon.log."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "daemon.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "configsync", "sync", "--repo", remote.url, "--redis", redis_url,
         "--namespace", namespace, "--interval", str(interval), "--workdir", str(workdir),
         *extra], stdout=log, stderr=log, stdin=subprocess.DEVNULL)


class GitHttp:
    """A bare repository served over git's "dumb" HTTP protocol on 127.0.0.1 (a real git
    client talks to it), optionally behind Basic auth. ``silent = True`` makes it accept
    connections and then never answer, as a hung server or a black-holing proxy does;
    ``delay`` slows every answer down."""

    def __init__(self, repo: str, *, user: str | None = None, password: str | None = None):
        import base64
        import http.server
        import threading

        git(Path(repo), "config", "receive.updateServerInfo", "true")
        git(Path(repo), "update-server-info")
        self.silent = False
        self.delay = 0.0
        self.requests: list[str] = []
        self.released = threading.Event()
        wanted = None if user is None else "Basic " + base64.b64encode(
            f"{user}:{password}".encode()).decode()
        root = Path(repo)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                while outer.silent and not outer.released.wait(0.05):
                    pass
                if outer.released.is_set():
                    return
                time.sleep(outer.delay)
                if wanted is not None and self.headers.get("Authorization") != wanted:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = root / self.path.split("?", 1)[0].removeprefix("/repo.git/")
                if not path.is_file() or root not in path.resolve().parents:
                    self.send_error(404)
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/repo.git"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def git_http(remote: Remote) -> Iterator[GitHttp]:
    """``remote`` served over HTTP (pushes to it are served at once)."""
    server = GitHttp(remote.url)
    yield server
    server.close()


def agent_events(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stream events with each ``applied`` event spread into one ``updated`` or ``deleted``
    entry per agent it lists (in its order), other events as they are."""
    flat: list[dict[str, Any]] = []
    for event in events:
        if event["type"] != "applied":
            flat.append(dict(event))
            continue
        for change in event["changes"] or ():
            flat.append({"type": "deleted" if change["deleted"] else "updated",
                         "agent_id": change["agent_id"], "version": change["version"],
                         **{k: event[k] for k in ("commit", "revision", "epoch")}})
    return flat


class DroppingProxy:
    """A TCP proxy in front of a redis-server that really loses pub/sub messages: while
    ``drop`` is above zero, each ``message`` frame from the server (RESP2 or RESP3) is
    swallowed (and ``drop`` counted down), as a network or an overflowing buffer would lose
    it. Everything else passes through byte for byte; what clients send is recorded, so
    :meth:`commands` tells exactly which commands they ran. ``url`` is the proxy's URL."""

    FRAMES = (b"*3\r\n$7\r\nmessage\r\n", b">3\r\n$7\r\nmessage\r\n")

    def __init__(self, port: int) -> None:
        import socket
        import threading
        self.upstream = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.drop = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.sent: list[bytearray] = []
        self.sockets: list[Any] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            sent = bytearray()
            self.sent.append(sent)
            threading.Thread(target=self._pump, args=(client, server, sent), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()

    def commands(self) -> list[str]:
        """Every command the clients sent so far, lower case, in order per connection."""
        names = []
        for sent in self.sent:
            data, at = bytes(sent), 0
            while at < len(data):
                end = data.index(b"\r\n", at)
                count, at = int(data[at + 1:end]), end + 2
                for i in range(count):
                    end = data.index(b"\r\n", at)
                    size = int(data[at + 1:end])
                    if i == 0:
                        names.append(data[end + 2:end + 2 + size].decode().lower())
                    at = end + 2 + size + 2
        return names

    def _pump(self, source: Any, sink: Any, record: bytearray | None) -> None:
        buf = b""
        try:
            while data := source.recv(65536):
                if record is not None:
                    record += data
                    sink.sendall(data)
                    continue
                buf += data
                buf = self._forward(buf, sink)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass

    def _forward(self, buf: bytes, sink: Any) -> bytes:
        frame_len = len(self.FRAMES[0])
        while buf:
            if buf.startswith(self.FRAMES):
                end = self._frame_end(buf, frame_len)
                if end is None:
                    return buf  # wait for the rest of the frame
                with self.lock:
                    lose = self.drop > 0
                    if lose:
                        self.drop -= 1
                        self.dropped += 1
                if not lose:
                    sink.sendall(buf[:end])
                buf = buf[end:]
                continue
            found = [at for f in self.FRAMES if (at := buf.find(f, 1)) > 0]
            if found:
                keep = min(found)
            else:  # hold back only a tail that may begin a frame; replies end in \r\n
                tail = next((k for k in range(min(len(buf), frame_len - 1), 0, -1)
                             if buf.endswith(tuple(f[:k] for f in self.FRAMES))), 0)
                keep = len(buf) - tail
            if keep == 0:
                return buf
            sink.sendall(buf[:keep])
            buf = buf[keep:]
        return buf

    @staticmethod
    def _frame_end(buf: bytes, at: int) -> int | None:
        for _ in range(2):  # channel, then data: two bulk strings
            line = buf.find(b"\r\n", at)
            if line < 0:
                return None
            size = int(buf[at + 1:line])
            at = line + 2 + size + 2
            if len(buf) < at:
                return None
        return at

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass


def sync_once(remote: Remote, server: RedisServer, workdir: Path) -> int:
    """``configsync sync --once`` in this process (a rewind is confirmed by a second fetch a
    moment later, as the CLI does)."""
    from configsync.cli import main

    return main(["sync", "--repo", remote.url, "--redis", server.url, "--once",
                 "--workdir", str(workdir)])


@pytest.fixture
def force_pushed(remote: Remote, redis_server: RedisServer, tmp_path: Path) -> Remote:
    """A daemon that followed a force-push live: agent a's Redis v2 ("bad deploy") was made on
    a commit the branch no longer has, so Redis numbers a's later versions one ahead of git:
    git v1 (initial) is Redis v1 and v3 (the rewind brought it back), git v2 ("a: 0.9") is
    Redis v4, served."""
    workdir = tmp_path / "wd"
    assert sync_once(remote, redis_server, workdir) == 0
    remote.commit_push("bad deploy", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                       "model: gpt-4o\ntemperature: 1.9\n"})
    assert sync_once(remote, redis_server, workdir) == 0
    git(remote.work, "reset", "-q", "--hard", "HEAD~1")
    remote.push(force=True)
    assert sync_once(remote, redis_server, workdir) == 0  # (fetches twice to confirm)
    remote.commit_push("a: 0.9", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                   "model: gpt-4o\ntemperature: 0.9\n"})
    assert sync_once(remote, redis_server, workdir) == 0
    return remote
