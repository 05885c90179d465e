"""``configsync sync`` on the command line: exit codes, the embedded Redis, signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from configsync.cli import main
from configsync.embedded import RedisServer, free_port
from configsync.redis_url import accepted_options
from configsync.store import Store

from .conftest import SETTINGS, Remote, git, spawn_daemon, wait_until

A1_TEMP = "system_prompt: You are A.\nmodel: gpt-4o\ntemperature: 0.4\n"


def sync(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["sync", *argv])
    return code, capsys.readouterr().err


def test_once_exits_0_when_applied_and_1_when_rejected(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--repo", remote.url, "--redis", redis_server.url, "--once",
            "--workdir", str(tmp_path / "wd")]
    code, err = sync(capsys, *args)
    assert code == 0, err
    assert "event=rebuilt" in err and "namespace=test" in err  # from configsync.yaml
    remote.commit_push("bad", {"agents/a.yaml": "model: gpt-4o\n"})
    code, err = sync(capsys, *args)
    assert code == 1
    assert "event=rejected" in err
    assert "set exactly one of `system_prompt` or `system_prompt_file`" in err
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    assert store.state()["last_error"]


def test_once_with_redis_down_is_a_one_line_error(remote: Remote, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    code, err = sync(capsys, "--repo", remote.url, "--redis", url, "--once",
                     "--workdir", str(tmp_path / "wd"), "--namespace", "x")
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("configsync: error: redis: ")
    assert last.endswith("(is Redis running, and the URL right?)")
    assert "hunter2" not in err and "Traceback" not in err


def test_bad_repo_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = sync(capsys, "--repo", str(tmp_path / "missing"), "--once")
    assert (code, err) == (2, f"configsync: error: no such repository: {tmp_path / 'missing'}\n")


def test_unreachable_remote_with_once(tmp_path: Path, redis_server: RedisServer,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, err = sync(capsys, "--repo", "https://bob:tok3n@127.0.0.1:9/r.git", "--once",
                     "--redis", redis_server.url, "--workdir", str(tmp_path / "wd"))
    assert code == 1
    assert "tok3n" not in err
    assert err.strip().splitlines()[-1].startswith(
        "configsync: error: git ls-remote https://127.0.0.1:9/r.git failed:")
    assert err.strip().endswith("(is the remote reachable?)")


def test_embedded_redis_when_no_url(remote: Remote, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "wd"
    proc = subprocess.run([sys.executable, "-m", "configsync", "sync", "--repo", remote.url,
                           "--once", "--workdir", str(workdir)],
                          capture_output=True, text=True, env={**os.environ}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    url = (workdir / "redis.url").read_text().strip()
    assert (f"level=info event=embedded_redis url={url} dir={(workdir / 'redis').resolve()}\n"
            in proc.stderr)  # with --once, no hint for agents: it stops a moment later
    assert (workdir / "redis" / "appendonly.aof").exists() or (
        workdir / "redis" / "appendonlydir").exists()
    # persisted: a second run starts the same server again and finds the state
    proc = subprocess.run([sys.executable, "-m", "configsync", "sync", "--repo", remote.url,
                           "--once", "--workdir", str(workdir)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "event=loaded" in proc.stderr and "event=rebuilt" not in proc.stderr


def test_default_repo_is_the_one_the_command_runs_in(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(remote.work)
    code, err = sync(capsys, "--redis", redis_server.url, "--once", "--workdir",
                     str(tmp_path / "wd"))
    assert code == 0, err
    assert f"source={remote.work}" in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_finishes_and_exits_0(remote: Remote, redis_server: RedisServer,
                                                tmp_path: Path, signum: signal.Signals) -> None:
    """SIGHUP too: no option changes without a restart (README), so a hang-up (a closed
    terminal) stops the daemon cleanly, as SIGTERM does."""
    proc = spawn_daemon(remote, redis_server.url, "test", tmp_path / "wd", interval=0.05)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    wait_until(lambda: "seen" in store.state())
    proc.send_signal(signum)
    assert proc.wait(timeout=20) == 0
    log = (tmp_path / "wd" / "daemon.log").read_text()
    assert f"event=stopping signal={signum.name}" in log and "event=stopped" in log


def test_log_format_json_is_one_object_a_line(remote: Remote, redis_server: RedisServer,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    workdir = str(tmp_path / "wd")
    assert sync(capsys, "--repo", remote.url, "--redis", redis_server.url, "--once",
                "--workdir", workdir)[0] == 0
    message = "two\nlines\u2028and https://user:hunter2@example.com/x"
    remote.commit_push(message, {"agents/a.yaml": A1_TEMP})
    code, err = sync(capsys, "--repo", remote.url, "--redis", redis_server.url, "--once",
                     "--workdir", workdir, "--log-format", "json")
    assert code == 0, err
    entries = [json.loads(line) for line in err.splitlines()]  # each line is one object
    assert [e["event"] for e in entries] == ["started", "loaded", "applied"]
    assert all(e["ts"].endswith("Z") and e["level"] == "info" for e in entries)
    started, _, applied = entries
    assert started["namespace"] == "test" and started["once"] == "true"
    assert applied["revision"] == 2 and applied["updated"] == 1  # numbers stay numbers
    assert applied["message"] == "two lines\u2028and https://example.com/x"  # (git's subject)
    assert "hunter2" not in err and "\u2028" not in err


def test_heartbeat_moves_every_interval(remote: Remote, redis_server: RedisServer,
                                        tmp_path: Path) -> None:
    proc = spawn_daemon(remote, redis_server.url, "test", tmp_path / "wd", interval=0.05)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    try:
        wait_until(lambda: "heartbeat_at" in store.state())
        first = store.state()["heartbeat_at"]
        wait_until(lambda: store.state()["heartbeat_at"] != first)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("argv", [["--interval", "0"], ["--keep", "0"]])
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sync", *argv])
    assert info.value.code == 2


def _bare_remote(root: Path, *branches: str) -> str:
    """A bare repository whose HEAD names the first of ``branches``, each holding one valid
    config commit."""
    remote = Remote(root, branch=branches[0])
    remote.commit_push("configs", {"configsync.yaml": SETTINGS,
                                   "agents/a.yaml": "system_prompt: A.\nmodel: gpt-4o\n"})
    for branch in branches[1:]:
        git(remote.work, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
    return remote.url


@pytest.mark.parametrize("branch", ["master", "main", "trunk"])
def test_default_branch_is_the_remotes_head(branch: str, tmp_path: Path,
                                            redis_server: RedisServer,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    url = _bare_remote(tmp_path / "git", branch, "other")
    code, err = sync(capsys, "--repo", url, "--redis", redis_server.url, "--once",
                     "--workdir", str(tmp_path / "wd"))
    assert code == 0, err
    assert f" branch={branch} " in err
    assert Store(redis.Redis.from_url(redis_server.url), "test").state()["branch"] == branch


def test_a_branch_the_remote_lacks_lists_the_ones_it_has(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _bare_remote(tmp_path / "git", "master", "dev")
    code, err = sync(capsys, "--repo", url, "--branch", "main", "--once",
                     "--redis", f"redis://127.0.0.1:{free_port()}/0",
                     "--workdir", str(tmp_path / "wd"))
    assert (code, err.strip().splitlines()[-1]) == (
        2, f"configsync: error: {url} has no branch main; it has: dev, master (pass --branch)")


def test_a_detached_head_with_several_branches_asks_for_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _bare_remote(tmp_path / "git", "dev", "prod")
    work = tmp_path / "git" / "work"
    git(work, "branch", "-q", "prod")
    git(work, "checkout", "-q", "--detach")
    code, err = sync(capsys, "--repo", str(work), "--once", "--workdir", str(tmp_path / "wd"),
                     "--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"configsync: error: {work} names no default branch (its HEAD is detached, or names "
        "a branch it does not have); pass --branch (it has: dev, prod)")


def test_default_workdir_is_inside_git_and_leaves_status_clean(
        remote: Remote, tmp_path: Path) -> None:
    """The README's main job: `configsync sync` in a config repository's checkout, with the
    embedded Redis. Nothing lands in the working tree."""
    proc = subprocess.run([sys.executable, "-m", "configsync", "sync", "--once"],
                          cwd=remote.work, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    workdir = remote.work / ".git" / "configsync"
    assert f"workdir={workdir}" in proc.stderr
    assert (workdir / "mirror" / "HEAD").is_file() and (workdir / "redis.url").is_file()
    assert git(remote.work, "status", "--porcelain", "--ignored") == ""


def test_default_workdir_for_a_url_is_in_the_state_directory(
        remote: Remote, tmp_path: Path, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    url = f"file://{remote.url}"
    code, err = sync(capsys, "--repo", url, "--redis", redis_server.url, "--once")
    assert code == 0, err
    (workdir,) = (tmp_path / "state" / "configsync").iterdir()
    assert workdir.name.startswith("remote-") and len(workdir.name) == len("remote-") + 12
    assert f"workdir={workdir}" in err and (workdir / "mirror" / "HEAD").is_file()
    # credentials in the URL do not move it
    from configsync.sync_cli import Source, default_workdir
    assert default_workdir(Source("https://u:p@h/x/remote.git")) == default_workdir(
        Source("https://h/x/remote.git"))


def test_two_daemons_never_share_a_workdir(remote: Remote, redis_server: RedisServer,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    proc = spawn_daemon(remote, redis_server.url, "test", tmp_path / "wd")
    try:
        wait_until(lambda: (tmp_path / "wd" / "lock").is_file()
                   and (tmp_path / "wd" / "lock").read_text().strip() == str(proc.pid))
        code, err = sync(capsys, "--repo", remote.url, "--redis", redis_server.url, "--once",
                         "--workdir", str(tmp_path / "wd"))
        assert (code, err.strip()) == (2, (
            f"configsync: error: another configsync sync (pid {proc.pid}) is using "
            f"{tmp_path / 'wd'}; stop it or pass a different --workdir"))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    code, err = sync(capsys, "--repo", remote.url, "--redis", redis_server.url, "--once",
                     "--workdir", str(tmp_path / "wd"))
    assert code == 0, err  # the lock went with the process


def test_started_shows_only_the_options_that_apply(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, err = sync(capsys, "--repo", remote.url, "--redis", redis_server.url, "--once",
                     "--workdir", str(tmp_path / "wd"))
    assert code == 0, err
    (started,) = [line for line in err.splitlines() if "event=started" in line]
    assert " once=true" in started and "interval=" not in started
    proc = spawn_daemon(remote, redis_server.url, "test", tmp_path / "wd2", interval=0.5)
    try:
        wait_until(lambda: "event=started" in (tmp_path / "wd2" / "daemon.log").read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    (started,) = [line for line in (tmp_path / "wd2" / "daemon.log").read_text().splitlines()
                  if "event=started" in line]
    assert " interval=0.5s" in started and "once=" not in started


def test_unreachable_remote_at_start_follows_the_branch_the_mirror_holds(
        tmp_path: Path, redis_server: RedisServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = _bare_remote(tmp_path / "git", "trunk")
    url = f"file://{path}"
    code, err = sync(capsys, "--repo", url, "--redis", redis_server.url, "--once",
                     "--workdir", str(tmp_path / "wd"))
    assert code == 0, err
    Path(path).rename(tmp_path / "gone.git")
    proc = subprocess.Popen(
        [sys.executable, "-m", "configsync", "sync", "--repo", url, "--redis", redis_server.url,
         "--workdir", str(tmp_path / "wd"), "--interval", "0.05"],
        stderr=subprocess.PIPE, text=True)
    try:
        lines = _until(proc, "remote_unreachable")
        assert [line.split(" event=")[1].split()[0] for line in lines] == [
            "started", "remote_unreachable"], lines  # said once, by the loop that retries
        assert " branch=trunk " in lines[0]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_repository_with_no_commits_says_so(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    git(tmp_path, "init", "-q", "empty")
    code, err = sync(capsys, "--repo", str(tmp_path / "empty"), "--once",
                     "--workdir", str(tmp_path / "wd"))
    assert (code, err.strip()) == (1, f"configsync: error: {tmp_path / 'empty'} has no branches "
                                      "yet: commit (or push) a first change to it")


def _embedded_daemon(repo: Path, workdir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "configsync", "sync", "--repo", str(repo),
                             "--workdir", str(workdir), "--interval", "0.05", *extra],
                            stderr=subprocess.PIPE, text=True)


def _until(proc: subprocess.Popen[str], event: str, timeout: float = 30.0) -> list[str]:
    """Lines of ``proc``'s stderr up to the first with ``event`` (fail after ``timeout``)."""
    import queue
    import threading

    assert proc.stderr is not None
    lines: queue.Queue[str | None] = getattr(proc, "lines", None) or queue.Queue()
    if not hasattr(proc, "lines"):
        proc.lines = lines  # type: ignore[attr-defined]

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {event} within {timeout} s: {seen}") from None
        if line is None:
            raise AssertionError(f"no {event} before the process ended: {seen}")
        seen.append(line)
        if f" event={event}" in line:
            return seen


def _servers(directory: Path) -> list[int]:
    """Pids of the live redis-servers working in ``directory`` (a server's cwd is its --dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "comm").read_text().strip() != "redis-server":
                continue
            if (entry / "stat").read_text().rsplit(") ", 1)[1][0] == "Z":
                continue
            if Path(os.readlink(entry / "cwd")) == directory:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_killed_daemons_embedded_redis_is_taken_over_not_doubled(
        remote: Remote, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    first = _embedded_daemon(Path(remote.url), workdir)
    try:
        _until(first, "rebuilt")
        url = (workdir / "redis.url").read_text().strip()
        first.kill()  # SIGKILL: no chance to stop its redis-server
        first.wait(timeout=10)
        assert len(_servers((workdir / "redis").resolve())) == 1
        second = _embedded_daemon(Path(remote.url), workdir)
        try:
            lines = _until(second, "loaded")
            (embedded,) = [line for line in lines if "event=embedded_redis" in line]
            assert f"url={url} " in embedded and " adopted=true" in embedded
            assert len(_servers((workdir / "redis").resolve())) == 1  # the same one
            second.send_signal(signal.SIGHUP)  # the terminal closed
            rest = "".join(_until(second, "stopped"))
            assert "event=stopping signal=SIGHUP" in rest
            assert second.wait(timeout=20) == 0
        finally:
            second.kill()
            second.wait()
        wait_until(lambda: not _servers((workdir / "redis").resolve()))
    finally:
        first.kill()
        first.wait()
        for pid in _servers((workdir / "redis").resolve()):  # never leave an orphan behind
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--redis", "localhost:6390"], {},
     "--redis: 'localhost:6390' is not a Redis URL; write redis://HOST:PORT/DB (rediss:// for "
     "TLS, unix:///path/to/redis.sock)"),
    (["--redis", "http://127.0.0.1:6390"], {},
     "--redis: 'http://127.0.0.1:6390' is not a Redis URL; write redis://HOST:PORT/DB "
     "(rediss:// for TLS, unix:///path/to/redis.sock)"),
    ([], {"CONFIGSYNC_REDIS_URL": "notaurl"},
     "CONFIGSYNC_REDIS_URL: 'notaurl' is not a Redis URL; write redis://HOST:PORT/DB (rediss:// "
     "for TLS, unix:///path/to/redis.sock)"),
    (["--redis", "redis://:pw@127.0.0.1:abc/0"], {},
     "--redis: 'redis://127.0.0.1:abc/0' is not a valid Redis URL (Port could not be cast to "
     "integer value as 'abc')"),
    (["--redis", "redis://"], {},  # redis-py would quietly use its default
     "--redis: 'redis://' names no host (redis-py would quietly use its default server on "
     "localhost); write redis://HOST:PORT/DB (rediss:// for TLS, unix:///path/to/redis.sock)"),
    (["--redis", "rediss://:pw@/3"], {},
     "--redis: 'rediss:///3' names no host (redis-py would quietly use its default server on "
     "localhost); write redis://HOST:PORT/DB (rediss:// for TLS, unix:///path/to/redis.sock)"),
    (["--redis", "redis://127.0.0.1:1/0?foo=bar"], {},
     "--redis: 'redis://127.0.0.1:1/0?foo=bar' has an option redis-py does not accept: foo; "
     "redis:// accepts: " + ", ".join(accepted_options("redis"))),
    (["--redis", "redis://[::1"], {},
     "--redis: 'redis://[::1' is not a valid Redis URL (Invalid IPv6 URL)"),
    (["--redis", "redis://h:1/abc"], {},
     "--redis: 'redis://h:1/abc' has 'abc' where the database number goes; write "
     "redis://HOST:PORT/DB (rediss:// for TLS, unix:///path/to/redis.sock)"),
    (["--redis", "unix://"], {},
     "--redis: 'unix://' names no socket; write redis://HOST:PORT/DB (rediss:// for TLS, "
     "unix:///path/to/redis.sock)"),
    (["--redis", "redis://127.0.0.1:1/0?db=3"], {},
     "--redis: 'redis://127.0.0.1:1/0?db=3' names database 0 in its path and 3 in ?db=; keep "
     "one"),
    (["--redis", "redis://127.0.0.1:1/0?encoding=latin-1"], {},
     "--redis: 'redis://127.0.0.1:1/0?encoding=latin-1' sets ?encoding=: configsync reads and "
     "writes UTF-8 only"),
    ([], {"CONFIGSYNC_REDIS_URL": ""},
     "CONFIGSYNC_REDIS_URL is set but empty: give it a URL, or unset it for the embedded Redis"),
])
def test_a_bad_redis_url_is_a_usage_error(argv: list[str], env: dict[str, str], message: str,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Said before anything runs: no workdir made, no remote asked."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, err = sync(capsys, "--repo", "https://127.0.0.1:9/unreachable.git", "--once",
                     "--workdir", str(tmp_path / "wd"), *argv)
    assert (code, err) == (2, f"configsync: error: {message}\n")
    assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize("namespace", ["", "a:b", "{x}", "eu[-_]west", "a\nb", "-x", "x" * 101])
def test_a_bad_namespace_is_a_usage_error(namespace: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sync", f"--namespace={namespace}", "--once"])
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()  # one line, not argparse's usage block
    assert line.startswith("configsync: error: argument --namespace: '")
    assert line.endswith("' is not a namespace: letters, digits, `.`, `_` and `-`, starting "
                         "with a letter or digit, at most 100 characters (see `configsync sync "
                         "--help`)")
    assert len(line) < 300


def test_a_rejected_head_says_why(remote: Remote, redis_server: RedisServer, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    remote.commit_push("bad head", {"agents/a.yaml": "system_prompt: A\nmodel: gpt-4o\n"
                                                     "temprature: 1\n"})
    args = ["--repo", remote.url, "--redis", redis_server.url, "--once",
            "--workdir", str(tmp_path / "wd")]
    code, err = sync(capsys, *args)  # a rebuild whose head is rejected
    assert code == 1
    why = "agents/a.yaml:3:1: temprature: unknown key, did you mean `temperature`?"
    (rejected,) = [line for line in err.splitlines() if "event=rejected" in line]
    assert f'error="{why}" during=rebuild' in rejected
    (final,) = [line for line in err.splitlines() if "event=head_not_applied" in line]
    assert f'error="{why}"' in final and "level=error" in final
    code, err = sync(capsys, *args)  # nothing new: still says why it exits 1
    assert code == 1 and "event=head_not_applied" in err and why in err


def test_git_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = sync(capsys, "--repo", f"file://{tmp_path}/nothing.git", "--once",
                     "--workdir", str(tmp_path / "wd"))
    assert code == 1
    (line,) = err.strip().splitlines()
    assert line.startswith(f"configsync: error: git ls-remote file://{tmp_path}/nothing.git "
                           "failed: fatal: ")
    assert "Could not read from remote repository." in line


def test_arguments_cannot_forge_output_lines(remote: Remote, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, err = sync(capsys, "--repo", remote.url, "--once", "--workdir", str(tmp_path / "wd"),
                     "--branch", "nope\nts=2026-01-01T00:00:00Z level=error event=forged")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "has no branch nope\\nts=2026" in line


def test_a_checkout_on_another_branch_does_not_take_over_the_namespace(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--redis", redis_server.url, "--once", "--workdir", str(tmp_path / "wd")]
    monkeypatch.chdir(remote.work)
    code, err = sync(capsys, *args)  # the checkout is on main: the namespace follows main
    assert code == 0, err
    git(remote.work, "checkout", "-q", "-b", "wip")
    remote.commit("wip experiment", {"agents/a.yaml": "system_prompt: WIP\nmodel: gpt-4o\n"})
    refused = (f"configsync: error: namespace 'test' follows branch main of {remote.work}; this "
               "daemon follows wip: pass --branch main to keep following main, or --adopt to "
               "move the namespace to wip")
    code, err = sync(capsys, *args)
    assert (code, err.strip().splitlines()[-1]) == (2, refused)
    code, err = sync(capsys, *args, "--branch", "wip")  # naming it is not taking it over
    assert (code, err.strip().splitlines()[-1]) == (2, refused)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    assert store.state()["branch"] == "main"
    assert store.current()["a"].config["system_prompt"] == "You are A."
    code, err = sync(capsys, *args, "--branch", "main")
    assert code == 0, err
    code, err = sync(capsys, *args, "--branch", "wip", "--adopt")  # the namespace moves
    assert code == 0, err
    assert "event=adopted" in err
    assert store.state()["branch"] == "wip"
    assert store.current()["a"].config["system_prompt"] == "WIP"


def test_a_namespace_moves_back_to_an_earlier_branch(
        tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    """--adopt moves a namespace even to a branch whose head is behind what it serves (the
    feature branch was made from it): that is no stale clone, and the heartbeat keeps moving."""
    remote = Remote(tmp_path / "git", branch="master")
    remote.commit_push("configs", {"configsync.yaml": "namespace: ns\n",
                                   "agents/a.yaml": "system_prompt: A\nmodel: m\n"})
    git(remote.work, "checkout", "-q", "-b", "feature")
    remote.commit("feature", {"agents/a.yaml": "system_prompt: F\nmodel: m\n"})
    git(remote.work, "push", "-q", "origin", "feature")
    args = ["--repo", remote.url, "--redis", redis_server.url, "--once",
            "--workdir", str(tmp_path / "wd")]
    store = Store(redis.Redis.from_url(redis_server.url), "ns")
    assert sync(capsys, *args)[0] == 0
    assert sync(capsys, *args, "--branch", "feature", "--adopt")[0] == 0
    assert store.current()["a"].config["system_prompt"] == "F"
    code, err = sync(capsys, *args, "--branch", "master", "--adopt")
    assert code == 0, err
    assert "event=adopted" in err and "branch=master" in err
    assert store.state()["branch"] == "master"
    assert store.current()["a"].config["system_prompt"] == "A"
    assert store.current()["a"].version == 3  # versions keep rising


def test_an_invalid_head_config_never_sends_the_daemon_to_another_namespace(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--repo", remote.url, "--redis", redis_server.url, "--once",
            "--workdir", str(tmp_path / "wd")]
    remote.commit_push("break the settings", {"configsync.yaml": SETTINGS + "bogus_key: 1\n"})
    code, err = sync(capsys, *args)
    assert code == 1  # the head is rejected, in the namespace the repository last named
    assert "event=namespace_from_older_commit namespace=test" in err
    (started,) = [line for line in err.splitlines() if "event=started" in line]
    assert " namespace=test " in started
    client = redis.Redis.from_url(redis_server.url)
    assert not client.exists("configsync:{default}:state")
    bare = Remote(tmp_path / "none")
    bare.commit_push("no settings", {"agents/a.yaml": "system_prompt: A\nmodel: m\n"})
    code, err = sync(capsys, "--repo", bare.url, "--redis", redis_server.url, "--once",
                     "--workdir", str(tmp_path / "wd2"))
    assert (code, err.strip().splitlines()[-1]) == (1, (
        "configsync: error: cannot tell which namespace to write: no valid configsync.yaml in "
        "the last 1 commit of main; fix it, or pass --namespace"))
    assert not client.exists("configsync:{default}:state")


def test_a_start_that_fails_leaves_no_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    code, _ = sync(capsys, "--repo", "https://127.0.0.1:9/never.git", "--once")
    assert code == 1
    assert list((tmp_path / "state" / "configsync").iterdir()) == []


def test_a_first_start_with_no_remote_waits_when_branch_and_namespace_are_given(
        tmp_path: Path, redis_server: RedisServer) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "configsync", "sync", "--repo", f"file://{tmp_path}/later.git",
         "--branch", "main", "--namespace", "later", "--redis", redis_server.url,
         "--workdir", str(tmp_path / "wd"), "--interval", "0.05"],
        stderr=subprocess.PIPE, text=True)
    try:
        lines = _until(proc, "remote_unreachable")
        assert " branch=main " in lines[-2] and "event=started" in lines[-2]
        remote = Remote(tmp_path / "git")  # the remote appears: the daemon catches up
        remote.commit_push("configs", {"configsync.yaml": "namespace: later\n",
                                       "agents/a.yaml": "system_prompt: A\nmodel: m\n"})
        Path(remote.url).rename(tmp_path / "later.git")
        store = Store(redis.Redis.from_url(redis_server.url), "later")
        wait_until(lambda: "a" in store.current())
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_a_silent_remote_never_hangs_the_daemon(remote: Remote, redis_server: RedisServer,
                                               tmp_path: Path) -> None:
    """A remote that accepts the connection and goes silent: each fetch ends at
    --fetch-timeout and is retried with backoff, the heartbeat keeps moving, the daemon
    catches up once the remote answers again, and SIGTERM mid-fetch exits 0 at once, leaving
    no git process behind."""
    from .conftest import GitHttp
    from .test_git import _processes

    server = GitHttp(remote.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "configsync", "sync", "--repo", server.url, "--redis",
         redis_server.url, "--workdir", str(tmp_path / "wd"), "--interval", "0.05",
         "--fetch-timeout", "1"], stderr=subprocess.PIPE, text=True)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    try:
        _until(proc, "rebuilt")
        server.silent = True
        (line,) = _until(proc, "remote_unreachable")[-1:]
        assert "timed out after 1 s" in line
        beat = store.state()["heartbeat_at"]
        wait_until(lambda: store.state()["heartbeat_at"] != beat)  # alive, and saying so
        server.silent = False
        _until(proc, "recovered")
        head = remote.commit_push("after", {"agents/a.yaml": A1_TEMP})
        wait_until(lambda: store.state()["commit"] == head)
        server.silent = True
        wait_until(lambda: bool(_processes(server.url)))  # a fetch is hanging right now
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - stopped < 5
        assert _processes(server.url) == []  # no orphaned git fetch
    finally:
        proc.kill()
        proc.wait()
        server.close()


@pytest.mark.parametrize("how", ["in the repository", "PYTHONPATH=.", "--repo URL from inside"])
def test_the_daemon_never_runs_code_from_the_config_repository(
        how: str, remote: Remote, redis_server: RedisServer, tmp_path: Path) -> None:
    """`schema: evilmod:Model` with evilmod.py committed beside configsync.yaml: `validate`
    refused it, but `python -m configsync sync --once` run inside the repository imported it
    (sys.path starts with the working directory)."""
    marker = tmp_path / "pwned"
    evil = f"open({str(marker)!r}, 'w').write('ran')\nfrom configsync import AgentConfig\n" \
           "class Model(AgentConfig):\n    pass\n"
    remote.commit_push("custom schema", {"configsync.yaml": SETTINGS + "schema: evilmod:Model\n",
                                         "evilmod.py": evil})
    env = {**os.environ, **({"PYTHONPATH": "."} if how == "PYTHONPATH=." else {})}
    repo = ["--repo", f"file://{remote.url}"] if how.startswith("--repo") else []
    proc = subprocess.run([sys.executable, "-m", "configsync", "sync", "--once", "--redis",
                           redis_server.url, "--workdir", str(tmp_path / "wd"), *repo],
                          cwd=remote.work, env=env, capture_output=True, text=True, timeout=60)
    assert not marker.exists(), "code from the config repository ran"
    assert proc.returncode == 1, proc.stderr  # the head is rejected
    assert "cannot import `evilmod`" in proc.stderr


def test_a_decoding_connection_and_a_tls_mismatch(remote: Remote, redis_server: RedisServer,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """CONFIGSYNC_REDIS_URL=...?decode_responses=True (shared by agents on the host) works;
    rediss:// against a plain server says it may be a TLS mismatch."""
    args = ["--repo", remote.url, "--once", "--workdir", str(tmp_path / "wd")]
    for _ in range(2):  # a rebuild, then a step from the state it wrote
        code, err = sync(capsys, *args, "--redis", redis_server.url + "?decode_responses=True")
        assert code == 0, err
    code, err = sync(capsys, *args, "--redis", redis_server.url.replace("redis://", "rediss://")
                     + "?socket_timeout=0.5")
    assert code == 1
    assert err.strip().splitlines()[-1].endswith(
        "(rediss:// speaks TLS: if this server is plain Redis, use redis://)")


def test_untrusted_text_never_forges_a_log_line(remote: Remote, redis_server: RedisServer,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A key, a commit message and an author name from the config repository, each holding a
    line break and a fake log line: every line of the daemon's log and of validate's text
    output is still one of ours."""
    forged = "ts=2099-01-01T00:00:00Z level=info event=applied commit=deadbeef revision=99"
    remote.commit_push(f"x\n{forged}", {
        "agents/a.yaml": f'system_prompt: A\nmodel: gpt-4o\n"x\\n{forged}": 1\n'},
        GIT_AUTHOR_NAME=f"Mallory\r{forged}")
    code, err = sync(capsys, "--repo", remote.url, "--redis", redis_server.url, "--once",
                     "--workdir", str(tmp_path / "wd"))
    assert code == 1
    remote.commit_push(f"fix\u2028{forged}", {"agents/a.yaml": "system_prompt: A\nmodel: gpt-4o\n"},
                       GIT_AUTHOR_NAME=f"Mallory\u2028{forged}")
    code, more = sync(capsys, "--repo", remote.url, "--redis", redis_server.url, "--once",
                      "--workdir", str(tmp_path / "wd"))
    assert code == 0, more
    for line in (err + more).splitlines():
        assert line.startswith("ts=2026-") or line.startswith("ts=20"), line
        assert "commit=deadbeef" not in line.split('"')[0], line
    assert "event=applied commit=deadbeef" not in "\n".join(
        line for line in (err + more).split("\n") if not line.startswith("ts=20"))
    git(remote.work, "reset", "-q", "--hard", "HEAD~1")
    assert main(["validate", str(remote.work)]) == 1
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and "\\n" + forged in out


def _verdicts(remote: Remote, redis_server: RedisServer, tmp_path: Path,
              capsys: pytest.CaptureFixture[str]) -> tuple[list[str], list[str], int]:
    """What the PR check (working-tree validate), `validate --ref HEAD` and the daemon say
    about the remote's work tree and head."""
    main(["validate", str(remote.work)])
    tree = capsys.readouterr().out.splitlines()
    main(["validate", str(remote.work), "--ref", "HEAD"])
    ref = capsys.readouterr().out.splitlines()
    code, _ = sync(capsys, "--repo", remote.url, "--redis", redis_server.url, "--once",
                   "--workdir", str(tmp_path / "wd"))
    return ([line.split(str(remote.work) + "/")[-1] for line in tree],
            [line.split(str(remote.work) + "/")[-1] for line in ref], code)


def test_a_submodule_gets_one_verdict_everywhere(remote: Remote, redis_server: RedisServer,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    shared = Remote(tmp_path / "shared")
    shared.commit_push("shared", {"extra.yaml": "system_prompt: S\nmodel: gpt-4o\n"})
    git(remote.work, "-c", "protocol.file.allow=always", "submodule", "add", "-q",
        shared.url, "agents/shared")
    remote.commit_push("add a submodule")
    tree, ref, code = _verdicts(remote, redis_server, tmp_path, capsys)
    message = ("agents/shared:1:1: error: is a git submodule: configsync reads only files "
               "committed in this repository (git stores a submodule as a pointer); copy the "
               "files in, or use git subtree")
    assert tree == ref == [message] and code == 1


def test_a_git_lfs_file_gets_one_verdict_everywhere(remote: Remote, redis_server: RedisServer,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Committed as an LFS pointer (what git stores); the working tree holds the content
    (what LFS's smudge filter writes): both are the same error."""
    pointer = ("version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 +
               "\nsize 12\n")
    remote.commit_push("prompt in LFS", {
        ".gitattributes": "*.md filter=lfs diff=lfs merge=lfs -text\n",
        "prompts/p.md": pointer,
        "agents/a.yaml": "system_prompt_file: prompts/p.md\nmodel: gpt-4o\n"})
    (remote.work / "prompts" / "p.md").write_text("You are A.\n")  # smudged, in the tree
    tree, ref, code = _verdicts(remote, redis_server, tmp_path, capsys)
    message = ("prompts/p.md:1:1: error: is stored with Git LFS (.gitattributes line 1: `*.md`, "
               "filter=lfs): git stores a pointer and the daemon would serve it; keep config "
               "files out of LFS (remove their pattern from .gitattributes and commit them "
               "again)")
    assert tree == ref == [message] and code == 1
    remote.commit_push("no attributes, still a pointer", {".gitattributes": "# none\n",
                                                          "prompts/p.md": pointer})
    tree, ref, code = _verdicts(remote, redis_server, tmp_path, capsys)
    assert tree == ref == [
        "prompts/p.md:1:1: error: is a Git LFS pointer, not the file: git stores a pointer and "
        "the daemon would serve it; keep config files out of LFS (remove their pattern from "
        ".gitattributes and commit them again)"] and code == 1


def test_a_shallow_source_says_what_to_run(remote: Remote, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    remote.commit_push("two", {"agents/a.yaml": "system_prompt: A2\nmodel: gpt-4o\n"})
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{remote.url}", "shallow")
    code, err = sync(capsys, "--repo", str(tmp_path / "shallow"), "--once",
                     "--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert (code, err.strip()) == (2, (
        f"configsync: error: {tmp_path / 'shallow'} is a shallow clone (git clone --depth, "
        "the default of actions/checkout): configsync needs the branch's whole history "
        "(versions count commits); run `git fetch --unshallow` there, or pass --repo with the "
        "remote's URL"))


def test_sigterm_while_starting_stops_at_once(remote: Remote, tmp_path: Path) -> None:
    """The handlers used to come after ls-remote, the embedded Redis and the first fetch:
    SIGTERM then killed the daemon at once (143, no log line) and left git and redis-server
    running. It stops cleanly now, whatever it is doing, and leaves nothing behind."""
    from .conftest import GitHttp
    from .test_git import _processes

    server = GitHttp(remote.url)
    server.silent = True
    proc = subprocess.Popen([sys.executable, "-m", "configsync", "sync", "--repo", server.url,
                             "--workdir", str(tmp_path / "wd"), "--fetch-timeout", "30"],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: bool(_processes(server.url)))  # ls-remote hangs on the remote
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - stopped < 5
        err = proc.stderr.read() if proc.stderr else ""
        assert "event=stopping signal=SIGTERM" in err and "event=stopped" in err, err
        assert _processes(server.url) == [] and not (tmp_path / "wd").exists()
    finally:
        proc.kill()
        proc.wait()
        server.close()


@pytest.mark.parametrize(("attributes", "where"), [
    ({"prompts/.gitattributes": "*.md filter=lfs\n"}, "prompts/.gitattributes line 1: `*.md`"),
    ({".gitattributes": "[attr]big filter=lfs -text\n*.md big\n"}, ".gitattributes line 2: `*.md`"),
    ({".gitattributes": '"prompts/p.md" filter=lfs\n'}, ".gitattributes line 1: `prompts/p.md`"),
])
def test_filtered_files_get_one_verdict_everywhere(
        attributes: dict[str, str], where: str, remote: Remote, redis_server: RedisServer,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nested .gitattributes, macros and quoted patterns: the working tree (smudged content)
    and git (a pointer) used to disagree."""
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "b" * 64 + "\nsize 9\n"
    remote.commit_push("prompt in LFS", {
        **attributes, "prompts/p.md": pointer,
        "agents/a.yaml": "system_prompt_file: prompts/p.md\nmodel: gpt-4o\n"})
    (remote.work / "prompts" / "p.md").write_text("You are A.\n")
    tree, ref, code = _verdicts(remote, redis_server, tmp_path, capsys)
    assert tree == ref == [f"prompts/p.md:1:1: error: is stored with Git LFS ({where}, "
                           "filter=lfs): git stores a pointer and the daemon would serve it; "
                           "keep config files out of LFS (remove their pattern from "
                           ".gitattributes and commit them again)"] and code == 1


def test_any_filter_gets_one_verdict_everywhere(remote: Remote, redis_server: RedisServer,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """git-crypt style: the blob is ciphertext, which the daemon reported as bad UTF-8."""
    remote.commit_push("encrypted prompt", {
        ".gitattributes": "prompts/*.md filter=crypt diff=crypt\n",
        "prompts/p.md": b"\x1f\x8b\x08\x00ciphertext",
        "agents/a.yaml": "system_prompt_file: prompts/p.md\nmodel: gpt-4o\n"})
    (remote.work / "prompts" / "p.md").write_text("You are A.\n")
    tree, ref, code = _verdicts(remote, redis_server, tmp_path, capsys)
    assert tree == ref == [
        "prompts/p.md:1:1: error: is stored through the `crypt` filter (.gitattributes line 1: "
        "`prompts/*.md`, filter=crypt): git stores what the filter makes, and the daemon would "
        "serve it; keep config files out of filters (remove their pattern from .gitattributes "
        "and commit them again)"] and code == 1


def test_an_uninitialised_submodule_gets_the_same_verdict(
        remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A plain `git clone` (and actions/checkout) leaves a submodule's folder empty: the PR
    check passed while the daemon rejected the commit."""
    shared = Remote(tmp_path / "shared")
    shared.commit_push("shared", {"extra.yaml": "system_prompt: S\nmodel: gpt-4o\n"})
    git(remote.work, "-c", "protocol.file.allow=always", "submodule", "add", "-q",
        shared.url, "agents/team")
    remote.commit_push("add a submodule")
    clone = tmp_path / "plain-clone"
    git(tmp_path, "clone", "-q", remote.url, str(clone))  # no --recurse-submodules
    assert (clone / "agents" / "team").is_dir() and not any((clone / "agents" / "team").iterdir())
    main(["validate", str(clone)])
    tree = [line.split(str(clone) + "/")[-1] for line in capsys.readouterr().out.splitlines()]
    _, ref, code = _verdicts(remote, redis_server, tmp_path, capsys)
    assert tree == ref == ["agents/team:1:1: error: is a git submodule: configsync reads only "
                           "files committed in this repository (git stores a submodule as a "
                           "pointer); copy the files in, or use git subtree"] and code == 1


@pytest.mark.slow  # waits out real delays; in .ci/run, not the quick subset
def test_once_confirms_a_rewind_with_a_second_fetch_a_moment_later(
        remote: Remote, redis_server: RedisServer, tmp_path: Path) -> None:
    """A source that answers an older head for a moment: --once's two fetches used to happen
    in the same instant, and it regressed."""
    args = [sys.executable, "-m", "configsync", "sync", "--repo", remote.url, "--redis",
            redis_server.url, "--once", "--workdir", str(tmp_path / "wd")]
    old = remote.commit_push("old", {"agents/a.yaml": A1_TEMP})
    new = remote.commit_push("new", {"agents/a.yaml": A1_TEMP.replace("0.4", "0.8")})
    assert subprocess.run(args, capture_output=True, timeout=60).returncode == 0
    git(Path(remote.url), "update-ref", "refs/heads/main", old)  # lagging, for a moment
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    _until(proc, "force_push_seen")
    git(Path(remote.url), "update-ref", "refs/heads/main", new)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "event=force_push " not in err, err  # served: the head
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    assert store.state()["commit"] == new


def test_namespace_discovery_is_bounded(remote: Remote, redis_server: RedisServer,
                                        tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A 19 MB configsync.yaml at the head took 15 s and 1 GB to find the namespace in."""
    remote.commit_push("huge settings", {"configsync.yaml": SETTINGS + "#" * 300_000 + "\n"})
    code, err = sync(capsys, "--repo", remote.url, "--redis", redis_server.url, "--once",
                     "--workdir", str(tmp_path / "wd"))
    assert code == 1  # the head is rejected (over the size limit), in the right namespace
    assert "event=namespace_from_older_commit namespace=test" in err


def test_a_shallow_source_url_says_so(remote: Remote, redis_server: RedisServer, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    remote.commit_push("two", {"agents/a.yaml": A1_TEMP})
    git(tmp_path, "clone", "-q", "--bare", "--depth", "1", f"file://{remote.url}", "shallow.git")
    code, err = sync(capsys, "--repo", f"file://{tmp_path}/shallow.git", "--once",
                     "--redis", redis_server.url, "--workdir", str(tmp_path / "wd"))
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"configsync: error: file://{tmp_path}/shallow.git is a shallow clone (git clone "
        "--depth): configsync needs the branch's whole history; run `git fetch --unshallow` "
        "there, or point --repo at the repository it came from")


def test_the_documented_daemon_acl_is_enough(remote: Remote, redis_server: RedisServer,
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """README's least-privilege line for the daemon: rebuild, apply, trim, publish."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    line = next(x.strip() for x in readme.splitlines()
                if x.strip().startswith("ACL SETUSER configsync-daemon"))
    rules = line.replace("{default}", "{test}").replace(">DAEMON_PASSWORD", ">daemon-pw")
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command(*rules.split())
    url = redis_server.url.replace("redis://", "redis://configsync-daemon:daemon-pw@")
    args = ["--repo", remote.url, "--redis", url, "--once", "--keep", "1",
            "--workdir", str(tmp_path / "wd")]
    assert sync(capsys, *args)[0] == 0
    remote.commit_push("tune", {"agents/a.yaml": A1_TEMP})
    code, err = sync(capsys, *args)
    assert code == 0, err
    store = Store(admin, "test")
    assert store.current()["a"].version == 2 and sorted(store.history("a")) == [2]
    admin.close()


def _spawn(remote: Remote, workdir: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``configsync sync`` polling every 50 ms, logging outside its workdir."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "configsync", "sync", "--repo",
                                 "file://" + remote.url, "--namespace", "test", "--interval",
                                 "0.05", "--workdir", str(workdir), *extra],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL)


def _remove(folder: Path) -> None:
    """Remove ``folder`` at once, as ``rm -rf`` does when it wins the race with a daemon that
    writes there every 50 ms (renamed away first, then deleted)."""
    gone = folder.with_name(folder.name + ".gone")
    folder.rename(gone)
    shutil.rmtree(gone)


@pytest.mark.slow
@pytest.mark.parametrize("lost", ["mirror", "workdir"])
def test_a_removed_workdir_is_made_again_and_the_daemon_carries_on(
        lost: str, remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17, item 10: a tmp cleaner or an operator removes the mirror or the whole
    workdir under a running daemon. It makes them again (the lock file too: a second daemon
    is still refused) and applies the next push."""
    workdir, log = tmp_path / "wd", tmp_path / "daemon.log"
    proc = _spawn(remote, workdir, log, "--redis", redis_server.url)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    try:
        wait_until(lambda: "seen" in store.state(), timeout=20)
        _remove(workdir / "mirror" if lost == "mirror" else workdir)
        sha = remote.commit_push("after", {"agents/a.yaml": A1_TEMP})
        wait_until(lambda: store.state().get("commit") == sha, timeout=20)
        assert store.current()["a"].config["temperature"] == 0.4
        wait_until(lambda: (workdir / "lock").is_file()
                   and (workdir / "lock").read_text().strip() == str(proc.pid))
        code, err = sync(capsys, "--repo", remote.url, "--redis", redis_server.url, "--once",
                         "--workdir", str(workdir))
        assert code == 2 and f"another configsync sync (pid {proc.pid})" in err
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        store.redis.close()
    text = log.read_text()
    assert "event=mirror_rebuilt" in text
    assert ("event=workdir_restored restored=lock" in text) == (lost == "workdir")
    assert "Traceback" not in text


@pytest.mark.slow
def test_a_removed_workdir_brings_back_the_embedded_redis(remote: Remote,
                                                          tmp_path: Path) -> None:
    """The embedded Redis's folder went with the workdir: it could no longer save, and
    refuses writes once a save fails (MISCONF). It is restarted on its port, empty, and the
    daemon rebuilds the state from git."""
    workdir, log = tmp_path / "wd", tmp_path / "daemon.log"
    proc = _spawn(remote, workdir, log)
    try:
        wait_until(lambda: (workdir / "redis.url").is_file(), timeout=20)
        url = (workdir / "redis.url").read_text().strip()
        client = redis.Redis.from_url(url, socket_timeout=5)
        store = Store(client, "test")
        wait_until(lambda: "seen" in store.state(), timeout=20)
        _remove(workdir)
        sha = remote.commit_push("after", {"agents/a.yaml": A1_TEMP})

        def served() -> bool:
            try:
                return store.state().get("commit") == sha
            except redis.RedisError:
                return False

        wait_until(served, timeout=30)
        assert (workdir / "redis.url").read_text().strip() == url  # the agents' URL holds
        assert (workdir / "redis").is_dir() and (workdir / "lock").is_file()
        client.bgsave()  # it can save again
        wait_until(lambda: client.info("persistence")["rdb_bgsave_in_progress"] == 0)
        assert client.info("persistence")["rdb_last_bgsave_status"] == "ok"
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    text = log.read_text()
    assert "event=workdir_restored restored=embedded_redis" in text
    assert "Traceback" not in text


# -- issue 17 red team, finding 2: who owns a namespace after Redis lost its data ------------

def _intruder(remote: Remote, tmp_path: Path) -> tuple[Path, str]:
    """A clone of the remote with an extra commit that was never merged (w3 in the report)."""
    clone = tmp_path / "w3"
    git(tmp_path, "clone", "-q", remote.url, str(clone))
    (clone / "agents" / "a.yaml").write_text("system_prompt: Unmerged A.\nmodel: gpt-4o\n")
    git(clone, "commit", "-q", "-am", "not merged")
    return clone, git(clone, "rev-parse", "HEAD").strip()


def _sync(repo: str, redis_url: str, workdir: Path, *extra: str
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configsync", "sync", "--repo", repo, "--redis", redis_url,
         "--namespace", "rtb", "--workdir", str(workdir), *extra],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


@pytest.mark.slow  # real daemons, started and stopped
def test_a_daemon_wins_its_namespace_back_from_another_sources_first_start(
        remote: Remote, redis_server: RedisServer, tmp_path: Path) -> None:
    """After FLUSHALL another clone's `sync --once` took the namespace without --adopt (it
    met no state), agents were served an unmerged commit, and the real daemon then exited 2
    at every start. Now its workdir says it served the namespace: it reclaims it (restarted,
    and live), and the clone, meeting a reclaimed state, stops with exit 2 (no fight)."""
    store = Store(redis.Redis.from_url(redis_server.url), "rtb")
    head = git(remote.work, "rev-parse", "HEAD").strip()
    clone, unmerged = _intruder(remote, tmp_path)
    wd_a, wd_b = tmp_path / "wdA", tmp_path / "wdB"

    a = spawn_daemon(remote, redis_server.url, "rtb", wd_a)
    try:
        wait_until(lambda: store.state().get("commit") == head or a.poll() is not None)
        assert store.state()["claimed"] == "first"
        assert _stop(a) == 0

        # order 1: the daemon is down; B's first start takes the emptied namespace
        store.redis.flushall()
        b = _sync(str(clone), redis_server.url, wd_b, "--once")
        assert b.returncode == 0, b.stderr
        state = store.state()
        assert (state["source"], state["commit"], state["claimed"]) == (
            str(clone), unmerged, "first")
        epoch = state["epoch"]
        a = spawn_daemon(remote, redis_server.url, "rtb", wd_a)
        wait_until(lambda: store.state().get("source") == remote.url or a.poll() is not None)
        assert a.poll() is None
        state = store.state()
        assert (state["commit"], state["claimed"]) == (head, "reclaim")
        assert state["epoch"] != epoch
        assert store.current()["a"].config["system_prompt"] == "You are A."

        # B, which served the namespace too, meets a reclaimed state: exit 2, as without it
        b = _sync(str(clone), redis_server.url, wd_b, "--once")
        assert b.returncode == 2, b.stderr
        assert "pass --adopt" in b.stderr and "Traceback" not in b.stderr
        assert store.state()["source"] == remote.url

        # order 2: the daemon runs (frozen while B writes): it reclaims at its next poll
        a.send_signal(signal.SIGSTOP)
        try:
            store.redis.flushall()
            shutil.rmtree(wd_b)  # (B's first start again: it never served the namespace)
            b = _sync(str(clone), redis_server.url, wd_b, "--once")
            assert b.returncode == 0, b.stderr
            assert store.state()["source"] == str(clone)
        finally:
            a.send_signal(signal.SIGCONT)
        wait_until(lambda: store.state().get("source") == remote.url or a.poll() is not None)
        assert a.poll() is None and store.state()["claimed"] == "reclaim"
        b = _sync(str(clone), redis_server.url, wd_b, "--once")
        assert b.returncode == 2, b.stderr
        assert a.poll() is None
    finally:
        if a.poll() is None:
            assert _stop(a) == 0
    log = (wd_a / "daemon.log").read_text()
    reclaimed = [line for line in log.splitlines() if "event=reclaimed" in line]
    assert len(reclaimed) == 2 and f"was_source={clone}" in reclaimed[0], log
    assert "Traceback" not in log


@pytest.mark.slow  # real daemons
def test_a_daemon_never_reclaims_what_it_did_not_serve_nor_an_adopted_namespace(
        remote: Remote, redis_server: RedisServer, tmp_path: Path) -> None:
    """The other order: the daemon's own first start after the flush wins; the clone (which
    never served the namespace) exits 2 as before; and a namespace moved with --adopt is not
    won back by its former daemon (only a `first` claim is reclaimable)."""
    store = Store(redis.Redis.from_url(redis_server.url), "rtb")
    head = git(remote.work, "rev-parse", "HEAD").strip()
    clone, unmerged = _intruder(remote, tmp_path)
    wd_a, wd_b = tmp_path / "wdA", tmp_path / "wdB"
    first = _sync(remote.url, redis_server.url, wd_a, "--once")
    assert first.returncode == 0, first.stderr
    store.redis.flushall()
    assert _sync(remote.url, redis_server.url, wd_a, "--once").returncode == 0
    b = _sync(str(clone), redis_server.url, wd_b, "--once")
    assert b.returncode == 2 and "pass --adopt" in b.stderr, b.stderr
    assert store.state()["commit"] == head
    # moved on purpose: B adopts it; A, which served it, does not take it back
    b = _sync(str(clone), redis_server.url, wd_b, "--once", "--adopt")
    assert b.returncode == 0, b.stderr
    assert (store.state()["commit"], store.state()["claimed"]) == (unmerged, "adopt")
    a = _sync(remote.url, redis_server.url, wd_a, "--once")
    assert a.returncode == 2 and "pass --adopt" in a.stderr, a.stderr
    assert store.state()["source"] == str(clone)


def test_the_daemon_never_keeps_stdin_open(remote: Remote, redis_server: RedisServer,
                                           tmp_path: Path) -> None:
    """Finding 5a: a `schema:` module that reads stdin blocked a daemon started with an open
    stdin (a terminal, a pipe); the daemon reopens fd 0 on /dev/null at start."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "reads_stdin.py").write_text(
        "import sys\nsys.stdin.read()\nfrom configsync import AgentConfig\n"
        "class Agent(AgentConfig):\n    pass\n")
    (site / "reads_fd0.py").write_text(
        "import os\nos.read(0, 10)\nfrom configsync import AgentConfig\n"
        "class Agent(AgentConfig):\n    pass\n")
    head = remote.commit_push("schema", {"configsync.yaml": SETTINGS
                                         + "schema: reads_stdin:Agent\n"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site),
                                                        str(Path(__file__).parents[1])])}
    env.pop("CONFIGSYNC_SCHEMA_MODULES", None)
    log = tmp_path / "daemon.log"
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    proc = subprocess.Popen(
        [sys.executable, "-m", "configsync", "sync", "--repo", remote.url, "--redis",
         redis_server.url, "--interval", "0.05", "--workdir", str(tmp_path / "wd")],
        stdin=subprocess.PIPE, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: store.state().get("commit") == head or proc.poll() is not None)
        head = remote.commit_push("fd 0", {"configsync.yaml": SETTINGS
                                           + "schema: reads_fd0:Agent\n"})
        wait_until(lambda: store.state().get("commit") == head or proc.poll() is not None)
        assert proc.poll() is None
        fd0 = os.readlink(f"/proc/{proc.pid}/fd/0")
        assert fd0 == os.devnull
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert _stop(proc) == 0
    said = log.read_text()
    # finding 5b: the allow-list is the production recommendation, said at start
    assert 'schema_modules="any (set CONFIGSYNC_SCHEMA_MODULES)"' in said, said
    assert "Traceback" not in said


@pytest.mark.slow  # a real daemon, restarted
def test_a_commit_naming_a_dev_namespace_is_rejected_and_restarts_keep_serving(
        remote: Remote, redis_server: RedisServer, tmp_path: Path) -> None:
    """Finding 4: `namespace: test-dev` only warned; the daemon applied it, then exited 2 at
    every restart until reverted. Now it is a rejected commit: the daemon keeps serving, and a
    restart takes the namespace of the last valid configsync.yaml."""
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    good = git(remote.work, "rev-parse", "HEAD").strip()

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / "daemon.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "configsync", "sync", "--repo", remote.url, "--redis",
             redis_server.url, "--interval", "0.05", "--workdir", str(tmp_path / "wd")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    proc = start()
    try:
        wait_until(lambda: store.state().get("commit") == good or proc.poll() is not None)
        bad = remote.commit_push("dev namespace", {
            "configsync.yaml": SETTINGS.replace("namespace: test", "namespace: test-Dev")})
        wait_until(lambda: store.state().get("seen") == bad or proc.poll() is not None)
        assert proc.poll() is None and store.state()["commit"] == good
        assert "ends in -dev" in json.loads(store.state()["last_error"])["message"]
        assert _stop(proc) == 0
        proc = start()
        later = remote.commit_push("more", {"agents/a.yaml": "system_prompt: A2\nmodel: gpt-4o\n"})
        wait_until(lambda: store.state().get("seen") == later or proc.poll() is not None)
        assert proc.poll() is None and store.state()["commit"] == good  # still rejected
        fixed = remote.commit_push("revert", {"configsync.yaml": SETTINGS})
        wait_until(lambda: store.state().get("commit") == fixed or proc.poll() is not None)
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            assert _stop(proc) == 0
    assert store.current()["a"].config["system_prompt"] == "A2"


def _in_clone(clone: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``configsync sync`` started inside the clone ``clone`` (its default workdir,
    ``.git/configsync``), polling every 50 ms, logging outside the repository."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "configsync", "sync", "--interval",
                                 "0.05", *extra], cwd=clone, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)


def _beats(store: Store, count: int) -> None:
    """Wait until the daemon stamped its heartbeat ``count`` more times (polls went by)."""
    for _ in range(count):
        before = store.state().get("heartbeat_at")
        wait_until(lambda before=before: store.state().get("heartbeat_at") != before,
                   timeout=30)


def _embedded_pid(client: redis.Redis) -> int:
    return int(client.info("server")["process_id"])


@pytest.mark.slow
@pytest.mark.parametrize("embedded", [True, False], ids=["embedded", "external"])
def test_a_repository_moved_away_or_removed_is_waited_for_never_made_again(
        embedded: bool, remote: Remote, tmp_path: Path, redis_server: RedisServer) -> None:
    """Issue 17 (red team of item 10): the daemon runs in a clone whose folder is moved away,
    moved back, then removed and cloned again. Nothing is made at the old path while it is
    away (so moving back and cloning again both work), the embedded Redis keeps its data
    while its folder is merely moved, and is restarted (never left in a deleted folder) once
    the folder it used is gone and the repository is back."""
    clone, away, log = tmp_path / "d1", tmp_path / "d1.away", tmp_path / "daemon.log"
    git(tmp_path, "clone", "-q", remote.url, str(clone))
    proc = _in_clone(clone, log, *([] if embedded else ["--redis", redis_server.url]))
    workdir = clone / ".git" / "configsync"
    try:
        if embedded:
            wait_until(lambda: (workdir / "redis.url").is_file(), timeout=20)
            url = (workdir / "redis.url").read_text().strip()
        else:
            url = redis_server.url
        client = redis.Redis.from_url(url, socket_timeout=5)
        store = Store(client, "test")
        wait_until(lambda: "seen" in store.state(), timeout=20)
        client.set("agent-side-data", "kept")
        pid = _embedded_pid(client)

        clone.rename(away)  # moved away: waited for, nothing made in its place
        wait_until(lambda: "event=source_gone" in log.read_text(), timeout=20)
        _beats(store, 2)
        assert not clone.exists()
        assert client.get("agent-side-data") == b"kept" and _embedded_pid(client) == pid

        away.rename(clone)  # moved back: it carries on, on the same server
        wait_until(lambda: "event=source_back" in log.read_text(), timeout=20)
        sha = remote.commit_push("a: 0.4", {"agents/a.yaml": A1_TEMP})
        git(clone, "pull", "-q", "--ff-only")
        wait_until(lambda: store.state().get("commit") == sha, timeout=20)
        assert not (clone / away.name).exists()
        assert client.get("agent-side-data") == b"kept" and _embedded_pid(client) == pid

        _remove(clone)  # removed (rm -rf), then cloned again at the same path
        wait_until(lambda: log.read_text().count("event=source_gone") == 2, timeout=20)
        _beats(store, 2)
        assert not clone.exists()
        git(tmp_path, "clone", "-q", remote.url, str(clone))  # the path was left free
        sha = remote.commit_push("a: 0.5", {"agents/a.yaml": A1_TEMP.replace("0.4", "0.5")})
        git(clone, "pull", "-q", "--ff-only")

        def served() -> bool:
            try:
                return store.state().get("commit") == sha
            except redis.RedisError:
                return False

        wait_until(served, timeout=30)
        assert (workdir / "lock").read_text().strip() == str(proc.pid)
        if embedded:  # its folder was deleted: restarted in the new one, the old one ended
            assert (workdir / "redis.url").read_text().strip() == url
            new = _embedded_pid(client)
            assert new != pid and not Path(f"/proc/{pid}").exists()
            assert _servers(workdir / "redis") == [new]
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    text = log.read_text()
    assert text.count("event=source_gone") == 2 and text.count("event=source_back") == 2
    assert ("restored=embedded_redis" in text) == embedded
    assert "Traceback" not in text


@pytest.mark.slow
def test_a_daemon_whose_workdir_was_taken_stops(remote: Remote, redis_server: RedisServer,
                                                tmp_path: Path) -> None:
    """Issue 17 (red team of item 10): the workdir is removed and a second daemon started
    on it before the first one's next poll. The first one stops at its next poll (exit 1,
    one line naming the other's pid), never writes again; the second carries on."""
    workdir = tmp_path / "wd"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    # (a local source: a push asks both for a sync at once; the poll itself is far away)
    first = _spawn(remote, workdir, first_log, "--redis", redis_server.url, "--repo",
                   remote.url, "--interval", "3600")
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    second = None
    try:
        wait_until(lambda: "seen" in store.state(), timeout=20)
        wait_until(lambda: "event=local_trigger " in first_log.read_text(), timeout=20)
        _remove(workdir)
        second = _spawn(remote, workdir, second_log, "--redis", redis_server.url, "--repo",
                        remote.url, "--interval", "3600")
        wait_until(lambda: "event=started" in second_log.read_text(), timeout=20)
        sha = remote.commit_push("after", {"agents/a.yaml": A1_TEMP})
        assert first.wait(timeout=20) == 1
        wait_until(lambda: store.state().get("commit") == sha, timeout=20)
        assert second.poll() is None
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
        store.redis.close()
    errors = [line for line in first_log.read_text().splitlines()
              if line.startswith("configsync: error:")]
    assert errors == [f"configsync: error: another configsync sync (pid {second.pid}) took "
                      f"the workdir {workdir} (it was removed and made again): this daemon "
                      "stops, two never share one"]
    assert "Traceback" not in first_log.read_text() + second_log.read_text()
    assert "remote_unreachable" not in second_log.read_text()


@pytest.mark.slow
def test_a_workdir_whose_parent_is_gone_is_waited_for(remote: Remote, redis_server: RedisServer,
                                                      tmp_path: Path) -> None:
    """Issue 17 (red team of item 10): ``--workdir`` inside a folder that is moved away: the
    daemon makes no folder above its workdir (``workdir_gone``, once), waits, and carries on
    when the folder is back."""
    parent, log = tmp_path / "state", tmp_path / "daemon.log"
    proc = _spawn(remote, parent / "wd", log, "--redis", redis_server.url)
    store = Store(redis.Redis.from_url(redis_server.url), "test")
    try:
        wait_until(lambda: "seen" in store.state(), timeout=20)
        parent.rename(tmp_path / "away")
        wait_until(lambda: "event=workdir_gone" in log.read_text(), timeout=20)
        _beats(store, 2)
        assert not parent.exists()
        (tmp_path / "away").rename(parent)
        sha = remote.commit_push("after", {"agents/a.yaml": A1_TEMP})
        wait_until(lambda: store.state().get("commit") == sha, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        store.redis.close()
    text = log.read_text()
    assert text.count("event=workdir_gone") == 1 and "event=workdir_back" in text
    assert "workdir_restored" not in text and "Traceback" not in text


def test_a_workdir_put_back_by_hand_never_leaves_redis_in_a_deleted_folder(
        remote: Remote, tmp_path: Path) -> None:
    """Issue 17 (red team of item 10): the workdir is removed and put back by hand (a copy)
    before the daemon's next poll: the embedded Redis's folder exists again, but the running
    server's is the deleted one. It is restarted in the folder there now (which holds the
    copied data), never left running in the deleted one."""
    workdir, log = tmp_path / "wd", tmp_path / "daemon.log"
    # (a local source: the push asks for the poll; the interval is far away)
    proc = _spawn(remote, workdir, log, "--repo", remote.url, "--interval", "3600")
    try:
        wait_until(lambda: (workdir / "redis.url").is_file(), timeout=20)
        url = (workdir / "redis.url").read_text().strip()
        client = redis.Redis.from_url(url, socket_timeout=5)
        store = Store(client, "test")
        wait_until(lambda: "seen" in store.state(), timeout=20)
        old = _embedded_pid(client)
        shutil.copytree(workdir, tmp_path / "copy", ignore=shutil.ignore_patterns("lock"))
        _remove(workdir)
        (tmp_path / "copy").rename(workdir)
        sha = remote.commit_push("after", {"agents/a.yaml": A1_TEMP})

        def served() -> bool:
            try:
                return store.state().get("commit") == sha
            except redis.RedisError:
                return False

        wait_until(served, timeout=30)
        new = _embedded_pid(client)
        assert new != old and _servers(workdir / "redis") == [new]
        assert not Path(f"/proc/{old}").exists()
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    text = log.read_text()
    assert "restored=lock" in text and "restored=embedded_redis" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("branch", [[], ["--branch", "main"]])
def test_a_clone_with_a_detached_head_and_no_local_branch_says_so(
        branch: list[str], remote: Remote, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17 (red team, url2 item 7): `sync --repo CLONE` (HEAD detached, no local branch,
    but origin/main) said "has no branches yet: commit (or push) a first change": not so."""
    git(remote.work, "checkout", "-q", "--detach")
    git(remote.work, "branch", "-q", "-D", "main")
    code, err = sync(capsys, "--repo", str(remote.work), "--redis", redis_server.url, "--once",
                     "--workdir", str(tmp_path / "wd"), *branch)
    assert code == 1 and err.count("\n") == 1, err
    assert "no branches yet" not in err
    assert (f"{remote.work} has no local branch (its HEAD is detached), only remote-tracking "
            f"ones (origin/main): check one out there (git checkout "
            f"{'main' if branch else 'BRANCH'}), or pass --repo the remote it was cloned "
            "from") in err
