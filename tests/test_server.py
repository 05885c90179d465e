"""``configsync sync --listen``: real HTTP requests to a real daemon (a thread, or the CLI as a
process) syncing a real git remote into a real redis-server."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from email.message import Message
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from configsync.embedded import RedisServer, free_port
from configsync.git import Mirror
from configsync.metrics import Metrics
from configsync.server import Server, bind
from configsync.store import Store
from configsync.sync import Daemon

from .conftest import FIXED_DATE, Remote, spawn_daemon, wait_until

SECRET = "s3cret-webhook-key"
A2 = "system_prompt: You are A.\nmodel: gpt-4o\ntemperature: 0.5\n"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(url: str, *, method: str = "GET", body: bytes | None = None,
            headers: Mapping[str, str] | None = None, timeout: float = 10
            ) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(url, data=body, method=method,  # noqa: S310 (http only)
                                 headers=dict(headers or {}))
    try:
        with _OPENER.open(req, timeout=timeout) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def github(body: bytes, event: str = "push", secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": event, "X-Hub-Signature-256": f"sha256={digest}",
            "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json"}


def push(ref: str = "refs/heads/main", after: str = "0" * 40) -> bytes:
    return json.dumps({"ref": ref, "after": after}).encode()


class Running:
    """A Daemon polling once an hour in a thread, and its HTTP server on a free port."""

    def __init__(self, tmp_path: Path, remote: Remote, server: RedisServer,
                 secret: str | None = SECRET) -> None:
        self.remote = remote
        self.redis = redis.Redis.from_url(server.url, socket_timeout=5)
        self.daemon = Daemon(mirror=Mirror(tmp_path / "mirror", remote.url),
                             store=Store(self.redis, "test"), keep=5)
        self.metrics = Metrics()
        self.daemon.metrics = self.metrics
        self.thread = threading.Thread(target=self.daemon.run, kwargs={"interval": 3600},
                                       daemon=True)
        self.thread.start()
        wait_until(lambda: self.daemon.synced, timeout=20)
        self.server = Server(self.daemon, bind("127.0.0.1", 0), redis_url=server.url,
                             origin="--redis", metrics=self.metrics, webhook_secret=secret)
        self.server.start()
        self.url = self.server.url

    def get(self, path: str, **kwargs: object) -> tuple[int, Message, bytes]:
        return request(self.url + path, **kwargs)  # type: ignore[arg-type]

    def hook(self, body: bytes, headers: Mapping[str, str]) -> int:
        return request(self.url + "/webhook", method="POST", body=body, headers=headers)[0]

    def served(self) -> str:
        return (self.redis.hget("configsync:{test}:state", "commit") or b"").decode()

    def samples(self) -> dict[str, float]:
        """Every sample of /metrics, as ``name{label="v"}`` → value (parsed by
        prometheus-client's own parser)."""
        status, _, body = self.get("/metrics")
        assert status == 200
        found = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items())
                                  if k != "le")
                if "le" in sample.labels:
                    continue
                found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
        return found

    def syncs(self) -> float:
        return self.samples()["configsync_sync_duration_seconds_count"]

    def close(self) -> None:
        self.daemon.stopping.set()
        self.thread.join(10)
        self.server.stop()
        self.daemon.mirror.close()
        self.redis.close()


@pytest.fixture
def running(tmp_path: Path, remote: Remote, redis_server: RedisServer) -> Iterator[Running]:
    r = Running(tmp_path, remote, redis_server)
    yield r
    r.close()


# -- webhooks --------------------------------------------------------------------------------

def test_github_webhook_answers(running: Running) -> None:
    body = push()
    wrong = github(body, secret="not-the-secret")
    unsigned = {k: v for k, v in github(body).items() if k != "X-Hub-Signature-256"}
    bad_prefix = {**github(body), "X-Hub-Signature-256": github(body)["X-Hub-Signature-256"][7:]}
    cases = [
        (body, github(body), 202),
        (body, wrong, 401),
        (body, unsigned, 401),
        (body, bad_prefix, 401),
        (b"{}", github(b"{}", "ping"), 204),
        (push("refs/heads/feature"), github(push("refs/heads/feature")), 204),
        (push("refs/tags/v1"), github(push("refs/tags/v1")), 204),
        (b'{"ref": ', github(b'{"ref": '), 400),
        (b'{"after": "x"}', github(b'{"after": "x"}'), 400),
        (b"[1]", github(b"[1]"), 400),
        (b"\xff\xfe", github(b"\xff\xfe"), 400),
        (b"{}", github(b"{}", "issues"), 204),
        (body, {"Content-Type": "application/json"}, 400),  # no event header at all
    ]
    for payload, headers, expected in cases:
        assert (running.hook(payload, headers), headers.get("X-GitHub-Event")) == \
            (expected, headers.get("X-GitHub-Event"))
    assert running.get("/webhook")[0] == 405
    status, _, text = running.get("/nowhere")
    assert (status, json.loads(text)) == (404, {"error": "not found"})
    samples = running.samples()
    assert {k: v for k, v in samples.items() if k.startswith("configsync_webhook_requests_total")
            } == {'configsync_webhook_requests_total{outcome="accepted"}': 1,
                  'configsync_webhook_requests_total{outcome="ignored"}': 4,
                  'configsync_webhook_requests_total{outcome="unauthorized"}': 3,
                  'configsync_webhook_requests_total{outcome="bad_request"}': 5,
                  'configsync_webhook_requests_total{outcome="too_large"}': 0}


def test_gitlab_gitea_and_forgejo_webhooks(running: Running) -> None:
    body = push()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    gitlab = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET,
              "Content-Type": "application/json"}
    assert running.hook(body, gitlab) == 202
    assert running.hook(body, {**gitlab, "X-Gitlab-Token": SECRET + "x"}) == 401
    assert running.hook(body, {"X-Gitlab-Event": "Push Hook"}) == 401
    assert running.hook(push("refs/tags/v1"), {**gitlab, "X-Gitlab-Event": "Tag Push Hook"}) \
        == 204
    for name in ("Gitea", "Forgejo"):
        # (both also send GitHub's headers: their own decide)
        signed = {f"X-{name}-Event": "push", f"X-{name}-Signature": digest,
                  "X-GitHub-Event": "push", "Content-Type": "application/json"}
        assert running.hook(body, signed) == 202
        assert running.hook(body, {**signed, f"X-{name}-Signature": "0" * 64}) == 401
        assert running.hook(body + b" ", signed) == 401  # the signature covers the body
        assert running.hook(push("refs/heads/other"), {
            **signed, f"X-{name}-Signature": hmac.new(
                SECRET.encode(), push("refs/heads/other"), hashlib.sha256).hexdigest()}) == 204


def test_a_signed_push_over_a_mebibyte_still_syncs(running: Running) -> None:
    # issue 17, item 7: a push of many commits (1.24 MB) was 413 and waited for the poll
    sha = running.remote.commit_push("a: 0.5", {"agents/a.yaml": A2})
    body = json.dumps({"ref": "refs/heads/main", "after": sha,
                       "commits": [{"message": "x" * 1000}] * 1240}).encode()
    assert len(body) > 1_240_000
    assert running.hook(body, github(body, secret="not-the-secret")) == 401
    assert running.served() != sha
    assert running.hook(body, github(body)) == 202
    wait_until(lambda: running.served() == sha, timeout=10)
    gitlab = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET}
    assert running.hook(body + b" ", gitlab) == 202


def test_no_secret_no_webhook(tmp_path: Path, remote: Remote,
                              redis_server: RedisServer) -> None:
    r = Running(tmp_path, remote, redis_server, secret=None)
    try:
        assert r.hook(push(), github(push())) == 404
        assert r.get("/healthz")[0] == 200
    finally:
        r.close()


def test_a_push_webhook_syncs_without_waiting_for_the_poll(running: Running) -> None:
    before = running.syncs()
    sha = running.remote.commit_push("a: 0.5", {"agents/a.yaml": A2})
    assert running.served() != sha  # the poll is an hour away
    assert running.hook(push(), github(push())) == 202
    wait_until(lambda: running.served() == sha, timeout=10)
    wait_until(lambda: running.syncs() == before + 1, timeout=5)  # (counted as sync() returns)


def test_a_burst_of_webhooks_coalesces_and_loses_nothing(running: Running) -> None:
    before = running.syncs()
    shas: list[str] = []

    bodies = [push(after=f"{i:040x}") for i in range(50)]  # (distinct pushes: distinct bodies)
    with ThreadPoolExecutor(2) as pool:  # (2 bodies at once from one address: its share)
        futures = [pool.submit(running.hook, b, github(b)) for b in bodies]
        for i in range(5):  # commits land during the burst
            shas.append(running.remote.commit_push(
                f"a {i}", {"agents/a.yaml": f"system_prompt: You are A{i}.\nmodel: gpt-4o\n"}))
        statuses = [f.result() for f in futures]
    last = push(after=shas[-1])
    assert running.hook(last, github(last)) == 202  # (one after the last push, as git does)
    assert statuses == [202] * 50
    wait_until(lambda: running.served() == shas[-1], timeout=15)
    syncs = running.syncs() - before
    assert 1 <= syncs < 25, syncs
    wait_until(lambda: running.samples()["configsync_commits_applied_total"] == len(shas),
               timeout=5)  # every commit applied, one by one


# -- metrics and health ----------------------------------------------------------------------

def test_metrics_follow_the_daemon(running: Running, tmp_path: Path) -> None:
    first = running.samples()
    assert first["configsync_rebuilds_total"] == 1
    assert first['configsync_events_published_total{type="rebuilt"}'] == 1
    assert first["configsync_commits_applied_total"] == 0
    assert first["configsync_seconds_behind_remote"] == 0
    fixed = datetime.fromisoformat(FIXED_DATE).timestamp()
    assert first["configsync_last_applied_commit_timestamp_seconds"] == fixed

    sha = running.remote.commit_push("a: 0.5", {"agents/a.yaml": A2})
    running.daemon.request_sync()
    wait_until(lambda: running.served() == sha, timeout=10)
    running.remote.commit_push("bad", {"agents/a.yaml": "model: gpt-4o\ntemperature: 9\n"})
    running.daemon.request_sync()
    wait_until(lambda: running.samples()["configsync_commits_rejected_total"] == 1, timeout=10)
    wait_until(lambda: running.samples()["configsync_seconds_behind_remote"] > 0, timeout=10)
    samples = running.samples()
    assert samples["configsync_commits_applied_total"] == 1
    assert samples['configsync_events_published_total{type="applied"}'] == 1
    assert samples['configsync_events_published_total{type="rejected"}'] == 1
    # behind by the rejected commit: now minus its committer time
    assert samples["configsync_seconds_behind_remote"] >= datetime.now().timestamp() - fixed - 5

    os.rename(running.remote.url, str(tmp_path / "moved.git"))  # the remote goes away
    running.daemon.request_sync()
    wait_until(lambda: running.samples().get(
        'configsync_fetch_errors_total{kind="failed"}', 0) >= 1, timeout=10)
    status, _, body = running.get("/readyz")
    assert status == 503 and json.loads(body)["reason"].startswith("remote_unreachable: ")


def test_a_removed_mirror_is_made_again_and_the_metrics_tell_the_truth(
        running: Running, tmp_path: Path) -> None:
    """Issue 17, item 10: the daemon's mirror is removed under it. The next poll makes it
    again and applies the push; while the source cannot be fetched, seconds behind is NaN
    (unknown), never 0, and the last successful fetch's time stays where it was."""
    fetched = running.samples()["configsync_last_successful_fetch_timestamp_seconds"]
    assert fetched > 0
    shutil.rmtree(tmp_path / "mirror")
    sha = running.remote.commit_push("a: 0.5", {"agents/a.yaml": A2})
    running.daemon.request_sync()
    wait_until(lambda: running.served() == sha, timeout=10)
    assert running.get("/readyz")[0] == 200
    assert running.samples()["configsync_seconds_behind_remote"] == 0

    os.rename(running.remote.url, str(tmp_path / "moved.git"))  # the source goes away
    shutil.rmtree(tmp_path / "mirror")
    running.daemon.request_sync()
    wait_until(lambda: running.get("/readyz")[0] == 503, timeout=10)
    samples = running.samples()
    assert math.isnan(samples["configsync_seconds_behind_remote"])
    last = samples["configsync_last_successful_fetch_timestamp_seconds"]
    assert last >= fetched
    os.rename(str(tmp_path / "moved.git"), running.remote.url)
    running.daemon.request_sync()
    wait_until(lambda: running.get("/readyz")[0] == 200, timeout=10)
    samples = running.samples()
    assert samples["configsync_seconds_behind_remote"] == 0
    assert samples["configsync_last_successful_fetch_timestamp_seconds"] != last  # a new one


def test_health_and_readiness(running: Running, redis_server: RedisServer) -> None:
    assert running.get("/healthz")[:1] == (200,)
    status, _, body = running.get("/readyz")
    assert (status, json.loads(body)) == (200, {"ready": True})
    redis_server.kill()
    status, _, body = running.get("/readyz")
    assert status == 503
    assert json.loads(body)["reason"].startswith("redis: ")
    assert running.get("/healthz")[0] == 200


# -- the read API ----------------------------------------------------------------------------

def loaded(running: Running, agent: str, version: int) -> bool:
    status, headers, _ = running.get(f"/agents/{agent}")
    return status == 200 and headers["X-Configsync-Version"] == str(version)


def test_read_api(running: Running) -> None:
    sha = running.remote.commit_push("refunds", {
        "agents/billing/refunds.yaml": "system_prompt: Refunds.\nmodel: gpt-4o\n"})
    running.daemon.request_sync()
    wait_until(lambda: running.served() == sha, timeout=10)
    wait_until(lambda: loaded(running, "billing/refunds", 1), timeout=10)
    status, _, body = running.get("/agents")
    listing = json.loads(body)
    current = {k.decode(): json.loads(v)
               for k, v in running.redis.hgetall("configsync:{test}:current").items()}
    assert status == 200 and listing["commit"] == sha
    assert listing["agents"] == {a: {"version": s["version"], "checksum": s["checksum"]}
                                 for a, s in sorted(current.items())}

    status, headers, body = running.get("/agents/billing/refunds")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert body == running.redis.hget("configsync:{test}:current", "billing/refunds")
    etag = headers["ETag"]
    assert etag == f'"{current["billing/refunds"]["checksum"]}"'
    assert running.get("/agents/billing/refunds", headers={"If-None-Match": etag})[0] == 304
    assert running.get("/agents/billing/refunds",
                       headers={"If-None-Match": f'"other", W/{etag}'})[0] == 304
    assert running.get("/agents/billing/refunds",
                       headers={"If-None-Match": '"other"'})[0] == 200

    status, headers, body = running.get("/agents/billing/refunds/versions/1")
    assert status == 200 and headers["ETag"] == etag
    assert body == running.redis.hget("configsync:{test}:history:billing/refunds", "1")
    assert running.get("/agents/billing/refunds/versions/1",
                       headers={"If-None-Match": etag})[0] == 304
    status, _, body = running.get("/agents/billing/refunds/versions/7")
    assert status == 404 and "version 7" in json.loads(body)["error"]
    status, _, body = running.get("/agents/nobody")
    assert (status, json.loads(body)) == (404, {"error": "unknown agent 'nobody'"})
    for bad in ("abc", "-1", "61", "nan", "inf"):
        assert running.get(f"/agents/a?wait={bad}")[0] == 400, bad
    assert running.get("/agents", method="POST")[0] == 405


def test_long_poll_returns_on_change(running: Running) -> None:
    wait_until(lambda: loaded(running, "a", 1), timeout=10)
    etag = running.get("/agents/a")[1]["ETag"]
    answer: list[tuple[int, Message, bytes]] = []
    poll = threading.Thread(target=lambda: answer.append(running.get(
        "/agents/a?wait=30", headers={"If-None-Match": etag}, timeout=40)))
    poll.start()
    sha = running.remote.commit_push("a: 0.5", {"agents/a.yaml": A2})
    running.daemon.request_sync()
    poll.join(20)
    assert answer, "the long poll did not return"
    status, headers, body = answer[0]
    assert (status, headers["X-Configsync-Version"], json.loads(body)["commit"]) == (200, "2",
                                                                                    sha)
    assert headers["ETag"] != etag
    # an old ETag answers at once with what is current
    assert running.get("/agents/a?wait=30", headers={"If-None-Match": etag})[0] == 200


def test_long_poll_times_out(running: Running) -> None:
    wait_until(lambda: loaded(running, "a", 1), timeout=10)
    etag = running.get("/agents/a")[1]["ETag"]
    status, headers, body = running.get("/agents/a?wait=1", headers={"If-None-Match": etag})
    assert (status, headers["ETag"], body) == (304, etag, b"")
    assert running.get("/agents/a?wait=0.5")[0] == 304  # no ETag: the current one


# -- the command line ------------------------------------------------------------------------

def test_cli_serves_webhooks_and_stops_on_sigterm(tmp_path: Path, remote: Remote,
                                                  redis_server: RedisServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("HOOK_SECRET", SECRET + "\n")  # (as `echo` or a file gives it)
    proc = spawn_daemon(remote, redis_server.url, "test", tmp_path / "wd", interval=3600,
                        extra=["--listen", f"127.0.0.1:{port}",
                               "--webhook-secret-env", "HOOK_SECRET"])
    url = f"http://127.0.0.1:{port}"
    client = redis.Redis.from_url(redis_server.url)
    try:
        def ready() -> bool:
            try:
                return request(url + "/readyz", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout=20)
        sha = remote.commit_push("a: 0.5", {"agents/a.yaml": A2})
        assert request(url + "/webhook", method="POST", body=push(), headers=github(push()))[0] \
            == 202
        wait_until(lambda: client.hget("configsync:{test}:state", "commit") == sha.encode(),
                   timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        client.close()
    log = (tmp_path / "wd" / "daemon.log").read_text()
    assert f"event=listening url=http://127.0.0.1:{port} webhook=on" in log
    assert "event=webhook status=202 outcome=accepted" in log
    assert "event=stopped" in log and SECRET not in log
    assert "event=webhook_secret_stripped" in log
    # issue 17, item 19: the first start (an empty Redis) is no warning: the daemon's own
    # namespace has no state until its first sync
    assert [line for line in log.splitlines() if "level=warning" in line
            and "webhook_secret_stripped" not in line] == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--listen", ":8080"], {}, "--listen: must be HOST:PORT or [IPV6]:PORT (got ':8080') "
                                "(name the interface: 127.0.0.1 for this machine only, 0.0.0.0 "
                                "or [::] for every one)"),
    (["--listen", "127.0.0.1:70000"], {}, "port 70000 is out of range"),
    (["--webhook-secret-env", "S"], {"S": "x"}, "--webhook-secret-env needs --listen"),
    (["--listen", "127.0.0.1:0", "--webhook-secret-env", "S"], {},
     "--webhook-secret-env S: the environment variable S is not set (or empty)"),
    (["--listen", "127.0.0.1:0", "--webhook-secret-env", "S"], {"S": " \n"},
     "--webhook-secret-env S: the environment variable S is not set (or empty)"),
    (["--listen", "127.0.0.1:0", "--once"], {}, "--listen serves while the daemon runs"),
])
def test_cli_usage_errors(tmp_path: Path, remote: Remote, args: list[str],
                          env: dict[str, str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "configsync", "sync", "--repo", remote.url,
                           "--redis", "redis://127.0.0.1:1/0", "--workdir", str(tmp_path / "w"),
                           *args], capture_output=True, text=True, env={**os.environ, **env},
                          timeout=30)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert not (tmp_path / "w").exists()


def test_cli_port_in_use_is_a_usage_error(tmp_path: Path, remote: Remote) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        done = subprocess.run([sys.executable, "-m", "configsync", "sync", "--repo", remote.url,
                               "--redis", "redis://127.0.0.1:1/0", "--workdir",
                               str(tmp_path / "w"), "--listen", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=30)
    finally:
        taken.close()
    assert done.returncode == 2
    assert done.stderr == (f"configsync: error: --listen 127.0.0.1:{port}: cannot listen: the "
                           "address is already in use (another process listens there)\n")


# -- what anyone who reaches the port can do ---------------------------------------------------

def raw(running: Running, data: bytes, source: str | None = None) -> socket.socket:
    """A connection to the server (from loopback address ``source``) that has sent ``data``
    and nothing more."""
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10,
                                    source_address=(source, 0) if source else None)
    sock.sendall(data)
    return sock


def closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (reading what it answered first)."""
    sock.settimeout(0.05)
    try:
        while chunk := sock.recv(65536):
            del chunk
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def answer(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if b"\r\n\r\n" in data:
            break
    return data


def test_idle_and_excess_connections_are_closed_and_syncs_go_on(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import configsync.server as server

    monkeypatch.setattr(server, "IDLE_SECONDS", 0.5)
    monkeypatch.setattr(server, "connection_limit", lambda: 6)
    running = Running(tmp_path, remote, redis_server)
    try:
        silent = raw(running, b"")
        slow_header = raw(running, b"GET /agents HTTP/1.1\r\nHost: x\r\n")  # then nothing
        wait_until(lambda: closed(silent) and closed(slow_header), timeout=10)
        crowd = [raw(running, b"") for _ in range(10)]  # more than the limit at once
        wait_until(lambda: sum(closed(s) for s in crowd) >= 4, timeout=10)
        wait_until(lambda: all(closed(s) for s in crowd), timeout=10)  # and the rest idle out
        assert running.get("/healthz")[0] == 200
        head = remote.commit_push("tune a", {"agents/a.yaml": A2})
        assert running.hook(push(), github(push())) == 202
        wait_until(lambda: running.served() == head, timeout=20)
    finally:
        running.close()


def test_webhook_bodies_are_bounded_in_size_and_time(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import configsync.server as server

    monkeypatch.setattr(server, "BODY_SECONDS", 0.5)
    monkeypatch.setattr(server, "IDLE_SECONDS", 0.5)
    running = Running(tmp_path, remote, redis_server)
    try:
        head = (b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n"
                b"X-Hub-Signature-256: sha256=0\r\nContent-Type: application/json\r\n")
        declared = raw(running, head + b"Content-Length: 10000000000\r\n\r\n")
        assert answer(declared).startswith(b"HTTP/1.1 413 ")  # before any of the body
        slow = raw(running, head + b"Content-Length: 100\r\n\r\n{\"ref\":")
        assert answer(slow).startswith(b"HTTP/1.1 408 ")
        gone = raw(running, head + b"Content-Length: 100\r\n\r\n{\"a")
        gone.close()
        deep = b"[" * 100_000 + b"]" * 100_000
        assert running.hook(deep, github(deep)) == 400
        wait_until(lambda: running.samples().get(
            'configsync_webhook_requests_total{outcome="disconnected"}', 0) == 1, timeout=10)
        assert not [r for r in caplog.records if r.exc_info]  # one line each, no traceback
        assert "event=http_bug" not in caplog.text  # a sender gone is no bug
        assert running.get("/healthz")[0] == 200
    finally:
        running.close()


def test_readiness_asks_for_the_sync_a_flushed_redis_needs(running: Running) -> None:
    assert running.get("/readyz")[0] == 200
    running.redis.flushall()
    status, _, body = running.get("/readyz")
    assert status == 503 and json.loads(body)["reason"].startswith("no state in Redis")
    wait_until(lambda: running.get("/readyz")[0] == 200, timeout=20)  # rebuilt at once
    assert running.served()


@pytest.mark.parametrize("wait", ["1_0", "+1", " 5", "1e1", "\u0661", "61", "-1", "nan"])
def test_a_wait_is_plain_seconds(running: Running, wait: str) -> None:
    from urllib.parse import quote

    status, _, body = running.get(f"/agents/a?wait={quote(wait)}")
    assert status == 400 and b"wait must be" in body


def test_healthz_answers_while_the_daemon_waits_on_a_silent_remote(
        tmp_path: Path, remote: Remote, redis_server: RedisServer) -> None:
    from .conftest import GitHttp

    git_server = GitHttp(remote.url)
    git_server.silent = True  # the start's ls-remote hangs until --fetch-timeout
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "configsync", "sync", "--repo", git_server.url, "--redis",
         redis_server.url, "--workdir", str(tmp_path / "wd"), "--fetch-timeout", "30",
         "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url + "/healthz") == 200, timeout=20)
        status, _, body = request(url + "/readyz", timeout=5)
        assert status == 503 and json.loads(body)["error"].startswith("starting: ")
        git_server.silent = False  # then the full server takes the port over
        wait_until(lambda: _answers(url + "/readyz") == 200, timeout=40)
        assert request(url + "/agents")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        git_server.close()


def _answers(url: str) -> int:
    try:
        return request(url, timeout=2)[0]
    except OSError:
        return 0


SIGNED_HEAD = (b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n"
               b"X-Hub-Signature-256: sha256=0\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100\r\n\r\n{")


def test_webhook_bodies_at_once_are_bounded_per_peer_and_in_all(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import configsync.server as server

    monkeypatch.setattr(server, "MIN_BODY_RATE", 0)  # (no body is slow: none gives way)
    running = Running(tmp_path, remote, redis_server)
    full = server.BODIES_AT_ONCE
    try:
        stalled = [raw(running, SIGNED_HEAD, f"127.0.0.{2 + i // 2}")
                   for i in range(server.BODIES_AT_ONCE)]  # two from each of eight addresses
        wait_until(lambda: len(running.server._bodies) == full, timeout=10)
        assert answer(raw(running, SIGNED_HEAD, "127.0.0.99")).startswith(b"HTTP/1.1 503 ")
        for sock in stalled[:2]:  # 127.0.0.2's two: a slot is free, not for 127.0.0.3
            sock.close()
        wait_until(lambda: len(running.server._bodies) < full, timeout=10)
        assert answer(raw(running, SIGNED_HEAD, "127.0.0.3")).startswith(b"HTTP/1.1 503 ")
        assert running.samples()['configsync_webhook_requests_total{outcome="busy"}'] == 2
        for sock in stalled[2:]:
            sock.close()
    finally:
        running.close()


def test_unsigned_senders_do_not_starve_signed_ones(running: Running) -> None:
    # issue 17, item 6: eight unsigned slow bodies made every signed push 503 for 10 s
    unsigned = SIGNED_HEAD.replace(b"X-Hub-Signature-256: sha256=0\r\n", b"")
    for sock in [raw(running, unsigned, "127.0.0.2") for _ in range(20)]:
        assert answer(sock).startswith(b"HTTP/1.1 401 ")  # before its body: no slot taken
    gitlab = (b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Gitlab-Event: Push Hook\r\n"
              b"X-Gitlab-Token: guess\r\nContent-Length: 100\r\n\r\n{")
    for sock in [raw(running, gitlab, "127.0.0.2") for _ in range(20)]:
        assert answer(sock).startswith(b"HTTP/1.1 401 ")
    wrongly_signed = [raw(running, SIGNED_HEAD, "127.0.0.2") for _ in range(20)]
    sha = running.remote.commit_push("a: 0.5", {"agents/a.yaml": A2})
    body = push(after=sha)
    assert running.hook(body, github(body)) == 202  # from 127.0.0.1, while they stall
    wait_until(lambda: running.served() == sha, timeout=10)
    wait_until(lambda: running.samples()[  # (two hold this address's slots: the rest, busy)
        'configsync_webhook_requests_total{outcome="busy"}'] == 18, timeout=10)
    for sock in wrongly_signed:
        sock.close()


def test_one_peer_cannot_flood_the_log(running: Running,
                                       caplog: pytest.LogCaptureFixture) -> None:
    # issue 17, item 6: one unauthenticated connection wrote 58-78 MiB of log in 2 s
    import http.client

    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    big = "x" * 8000
    for i in range(300):
        conn.request("POST", "/webhook", body=push(), headers={
            "X-GitHub-Event": big + str(i), "X-GitHub-Delivery": big,
            "X-Hub-Signature-256": "sha256=" + big})
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 401
    raw_lines = [b"GET /" + b"%" * 6000 + str(i).encode() + b" HTTP/1.1\r\n\r\n"
                 for i in range(100)]
    for line in raw_lines:
        assert b" 400 " in answer(raw(running, line)).split(b"\r\n")[0]
    conn.close()
    written = sum(len(r.getMessage()) for r in caplog.records)
    assert written < 256 * 1024, written  # (unbounded: 300 x 16 KB + 100 x 6 KB = 5.4 MB)
    assert max(len(r.getMessage()) for r in caplog.records) < 2000


def test_a_replayed_delivery_syncs_once(running: Running) -> None:
    # issue 17, item 7: one captured signed delivery replayed 10,000 times gave 90-208 fetches
    sha = running.remote.commit_push("a: 0.5", {"agents/a.yaml": A2})
    body = push(after=sha)
    before = running.syncs()
    assert running.hook(body, github(body)) == 202
    wait_until(lambda: running.served() == sha and running.syncs() == before + 1, timeout=10)

    def replay(i: int) -> int:  # the same delivery id, or a new one (it is not signed)
        return running.hook(body, {**github(body), "X-GitHub-Delivery": f"d-{i % 2 * i}"})

    with ThreadPoolExecutor(2) as pool:  # (two bodies at once from one address: its limit)
        statuses = list(pool.map(replay, range(400)))
    assert set(statuses) == {200}
    assert running.syncs() - before <= 2  # (the first; at most one more already asked)
    other = push(after="1" * 40)  # a new signed delivery still asks for a sync
    assert running.hook(other, github(other)) == 202
    wait_until(lambda: running.syncs() == before + 2, timeout=10)


def test_a_gitlab_system_hook_push_syncs(running: Running) -> None:
    sha = running.remote.commit_push("a: 0.5", {"agents/a.yaml": A2})
    system = {"X-Gitlab-Event": "System Hook", "X-Gitlab-Token": SECRET}
    tag = json.dumps({"event_name": "tag_push", "ref": "refs/tags/v1"}).encode()
    assert running.hook(tag, system) == 204
    body = json.dumps({"event_name": "push", "ref": "refs/heads/main", "after": sha}).encode()
    assert running.hook(body, system) == 202
    wait_until(lambda: running.served() == sha, timeout=10)


def test_a_secret_with_a_trailing_newline_is_stripped(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    r = Running(tmp_path, remote, redis_server, secret=SECRET + "\n")
    try:
        assert r.hook(push(), github(push())) == 202
        assert "event=webhook_secret_stripped" in caplog.text and SECRET not in caplog.text
    finally:
        r.close()


# -- floods and hostile requests (issue 17, items 5 and 8) ----------------------------------

def _polls(running: Running, count: int, *, keep: bool) -> list[socket.socket]:
    sent = []
    for _ in range(count):
        sock = raw(running, b"GET /agents/a?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n")
        if keep:
            sent.append(sock)
        else:
            sock.close()
    return sent


@pytest.mark.slow
def test_long_polls_whose_client_left_free_their_slot(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import configsync.server as server

    monkeypatch.setattr(server, "connection_limit", lambda: 20)
    running = Running(tmp_path, remote, redis_server)
    try:
        _polls(running, 80, keep=False)  # four times the limit, each closed at once

        def alive() -> bool:  # (a loaded machine may not have seen every EOF yet)
            try:
                return running.get("/healthz")[0] == 200
            except OSError:
                return False

        wait_until(alive, timeout=10)
        wait_until(lambda: not running.server._guard.server.connections, timeout=10)
        assert running.get("/agents")[0] == 200  # long before the polls' 60 s are up
    finally:
        running.close()


def test_probes_are_answered_when_every_slot_is_taken(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import configsync.server as server

    monkeypatch.setattr(server, "connection_limit", lambda: 20)
    monkeypatch.setattr(server, "LONG_POLL_SHARE", 1.0)
    running = Running(tmp_path, remote, redis_server)
    try:
        held = _polls(running, 20, keep=True)  # live long polls: every slot in use
        wait_until(lambda: len(running.server._guard.active) == 20, timeout=10)
        status, _, body = running.get("/agents")
        assert (status, json.loads(body)["error"]) == (503, "too many connections: try again "
                                                            "later")
        for _ in range(3 * server.RESERVED):  # (one probe a reserved connection)
            assert running.get("/healthz")[0] == 200
            assert running.get("/readyz")[0] == 200
        for sock in held:
            sock.close()
    finally:
        running.close()


@pytest.mark.slow
def test_a_flood_of_idle_connections_cannot_keep_a_probe_out(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import configsync.server as server

    monkeypatch.setattr(server, "connection_limit", lambda: 20)
    monkeypatch.setattr(server, "LONG_POLL_SHARE", 1.0)
    running = Running(tmp_path, remote, redis_server)
    try:
        silent = [raw(running, b"") for _ in range(3 * (20 + server.RESERVED))]
        slow = [raw(running, b"GET /agents HTTP/1.1\r\n") for _ in range(20)]  # (slowloris)
        assert running.get("/healthz")[0] == 200  # long before they would idle out (10 s)
        assert running.get("/agents")[0] == 200
        held = _polls(running, 20, keep=True)  # requests in progress are never evicted
        wait_until(lambda: len(running.server._guard.active) == 20, timeout=10)
        assert running.get("/healthz")[0] == 200
        for sock in silent + slow + held:
            sock.close()
    finally:
        running.close()


def test_many_readiness_probes_at_once_share_one_check(running: Running) -> None:
    # issue 17, item 8: 200 concurrent /readyz were 503 "Too many connections" (redis-py's
    # pool of 100) while Redis was fine
    import asyncio

    import aiohttp

    async def probes() -> list[int]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one() -> int:
                async with session.get(running.url + "/readyz") as reply:
                    return reply.status
            return list(await asyncio.gather(*(one() for _ in range(300))))

    assert set(asyncio.run(probes())) == {200}
    with ThreadPoolExecutor(50) as pool:  # and the read API's Redis reads wait their turn
        statuses = list(pool.map(lambda _: running.get("/agents/a/versions/1")[0], range(200)))
    assert set(statuses) == {200}


HOSTILE = [
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256=0\r\n\r\nzz\r\n",
    b"GET /agents HTTP/9.9\r\nHost: x\r\n\r\n",
    b"G\x00T /agents HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /agents/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /agents/a/versions/99999999999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /agents/a?wait=%ff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /agents/a?wait=1&wait=2 HTTP/1.1\r\nHost: x\r\nIf-None-Match: \xff\r\n\r\n",
    b"DELETE /agents/a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics?x=%00 HTTP/1.1\r\nHost: \xff\r\n\r\n",
    b"GET http://evil/readyz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("data", HOSTILE)
def test_every_bad_request_gets_a_json_answer(running: Running, data: bytes) -> None:
    reply = answer(raw(running, data))
    head = reply.partition(b"\r\n\r\n")[0]
    status = int(head.split(b" ")[1])
    assert status < 500 or status == 503, reply[:300]
    if status >= 400:
        assert b"application/json" in head.lower(), reply[:300]
    assert running.get("/healthz")[0] == 200


@pytest.mark.slow
def test_readyz_is_503_while_the_read_api_cannot_follow(
        tmp_path: Path, remote: Remote, redis_server: RedisServer) -> None:
    """Issue 17 (red team, url2 item 1): with a Redis user that may not SUBSCRIBE, the read
    API never followed (`/agents` stale, old versions) while `/readyz` answered 200. Now 503
    once stale for over FOLLOW_GRACE, naming the cause; the log says it once, as an error."""
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command(
        "ACL", "SETUSER", "nosub", "on", ">pw", "resetkeys", "~configsync:{test}:*",
        "resetchannels", "&configsync:{test}:*", "-@all", "+@read", "+@write",
        "+@transaction", "+@scripting", "+publish", "+ping", "+hello", "+client|setname",
        "+scan")
    url = redis_server.url.replace("redis://", "redis://nosub:pw@")
    port = free_port()
    proc = spawn_daemon(remote, url, "test", tmp_path / "wd", interval=3600,
                        extra=["--listen", f"127.0.0.1:{port}"])
    try:
        def not_ready() -> bool:
            try:
                status, _, body = request(f"http://127.0.0.1:{port}/readyz", timeout=5)
            except OSError:
                return False
            return status == 503 and "the read API cannot follow Redis" in body.decode()

        wait_until(not_ready, timeout=40)
        _, _, body = request(f"http://127.0.0.1:{port}/readyz")
        assert "no permissions" in json.loads(body)["reason"]

        def served_stale() -> bool:  # what Redis holds, read again at each retry, marked stale
            status, _, body = request(f"http://127.0.0.1:{port}/agents")
            return status == 200 and json.loads(body)["stale"] is True \
                and json.loads(body)["agents"]["a"]["version"] == 1

        wait_until(served_stale, timeout=40)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        admin.close()
    log = (tmp_path / "wd" / "daemon.log").read_text()
    assert log.count("event=refused") == 1 and "event=reconnected" not in log


# -- the red team's findings against --listen (issue 17) ----------------------------------------

def _gzip_bomb(size: int) -> bytes:
    import gzip

    return gzip.compress(b"0" * size, compresslevel=9)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZip", "gzip, identity",
                                      "x-gzip", "compress", "zstd"])
def test_a_compressed_webhook_is_refused_on_its_headers(running: Running,
                                                        encoding: str) -> None:
    # finding 1: aiohttp decompressed a 24 KB gzip to 24 MiB before the HMAC check, blocking
    # the loop; a 100 KB gzip past 25 MiB was 413 (not 401) with a bogus signature
    bomb = _gzip_bomb(26 * 1024 * 1024)
    for headers in ({**github(bomb), "X-Hub-Signature-256": "sha256=" + "0" * 64},
                    github(bomb)):  # (signed over the bytes sent: refused all the same)
        status, reply, body = request(running.url + "/webhook", method="POST", body=bomb,
                                      headers={**headers, "Content-Encoding": encoding})
        assert status == 415, body
        assert reply["Content-Type"].startswith("application/json")
        assert json.loads(body)["outcome"] == "unsupported_encoding"
    assert running.samples()['configsync_webhook_requests_total{outcome="unsupported_encoding"}'
                             ] == 2
    body = push()  # identity is no compression: accepted
    assert running.hook(body, {**github(body), "Content-Encoding": "identity"}) == 202


def test_nothing_is_decompressed_on_any_path(running: Running) -> None:
    # finding 1, the whole kind: a compressed body anywhere is bytes, never inflated
    for path in ("/healthz", "/readyz", "/agents", "/metrics"):
        sock = raw(running, f"GET {path} HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                            f"Content-Length: 9\r\nConnection: close\r\n\r\nnot gzip!".encode())
        assert answer(sock).startswith(b"HTTP/1.1 200 "), path  # (inflating it: 400)
        sock.close()


def _slow_bodies(running: Running, sources: list[str]) -> list[socket.socket]:
    socks = [raw(running, SIGNED_HEAD, source) for source in sources]
    wait_until(lambda: len(running.server._bodies) == len(sources), timeout=10)
    return socks


@pytest.mark.parametrize("sources", [
    [f"127.0.0.{2 + i // 2}" for i in range(14)] + ["127.0.0.1"] * 2,  # many addresses
    ["127.0.0.1"] * 2,  # one (a reverse proxy's): its two slots
], ids=["many-addresses", "one-address"])
def test_slow_bodies_give_their_slot_to_a_signed_push(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch, sources: list[str]) -> None:
    # finding 2: 16 slow fake-signed bodies (2 per address, or 2 behind one proxy) made every
    # signed push 503 for 10 s
    import configsync.server as server

    monkeypatch.setattr(server, "BODY_GRACE", 0.0)  # (no wait on the clock: slow at once)
    running = Running(tmp_path, remote, redis_server)
    try:
        slow = _slow_bodies(running, sources)
        sha = running.remote.commit_push("a: 0.5", {"agents/a.yaml": A2})
        body = push(after=sha)
        assert running.hook(body, github(body)) == 202  # from 127.0.0.1
        wait_until(lambda: running.served() == sha, timeout=10)
        dropped = [sock for sock in slow if not closed(sock) or True]
        replies = [answer(sock) for sock in dropped[-2:]]  # (127.0.0.1's: one was dropped)
        assert any(r.startswith(b"HTTP/1.1 408 ") and b'"slow_body"' in r for r in replies)
        samples = running.samples()
        assert samples['configsync_http_refused_total{reason="slow_body"}'] >= 1
        assert samples.get('configsync_webhook_requests_total{outcome="busy"}', 0) == 0
        for sock in slow:
            sock.close()
    finally:
        running.close()


def test_a_body_that_keeps_coming_keeps_its_slot(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # finding 2: only a slow body gives way; when none is slow, a new one is 503 as before
    import configsync.server as server

    monkeypatch.setattr(server, "BODY_GRACE", 0.0)
    monkeypatch.setattr(server, "MIN_BODY_RATE", 0)  # (every body counts as fast)
    running = Running(tmp_path, remote, redis_server)
    try:
        held = _slow_bodies(running, ["127.0.0.1"] * 2)
        body = push()
        assert running.hook(body, github(body)) == 503
        assert running.samples()['configsync_http_refused_total{reason="bodies"}'] == 1
        for sock in held:
            sock.close()
    finally:
        running.close()


def test_long_polls_hold_at_most_half_the_connections(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # finding 3: 300 long polls against 96 slots made a signed push, /agents and /metrics 503,
    # with no log line and no metric
    import configsync.server as server

    monkeypatch.setattr(server, "connection_limit", lambda: 20)
    running = Running(tmp_path, remote, redis_server)
    try:
        held = []
        for i in range(30):  # (one after the other: which ones are over the share is known)
            held += _polls(running, 1, keep=True)
            if i < 10:
                wait_until(lambda i=i: running.server._guard.polls == i + 1, timeout=10)
            else:  # over the share: answered at once, as if wait=0 (then idle, evictable)
                assert answer(held[-1]).startswith(b"HTTP/1.1 200 ")
        assert running.server._guard.polls == 10
        body = push()
        assert running.hook(body, github(body)) == 202
        assert running.get("/agents")[0] == 200
        samples = running.samples()
        assert samples['configsync_http_refused_total{reason="long_polls"}'] == 20
        assert "event=http_refused" in caplog.text and "reason=long_polls" in caplog.text
        for sock in held:
            sock.close()
    finally:
        running.close()


def test_webhooks_have_reserved_connections(
        tmp_path: Path, remote: Remote, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # finding 3: /webhook gets reserved capacity like the probes
    import configsync.server as server

    monkeypatch.setattr(server, "connection_limit", lambda: 20)
    monkeypatch.setattr(server, "LONG_POLL_SHARE", 1.0)  # (every slot a long poll)
    running = Running(tmp_path, remote, redis_server)
    try:
        held = _polls(running, 20, keep=True)
        wait_until(lambda: running.server._guard.polls == 20, timeout=10)
        assert running.get("/agents")[0] == 503
        body = push()
        assert running.hook(body, github(body)) == 202
        for sock in held:
            sock.close()
        wait_until(lambda: running.server._guard.polls == 0, timeout=10)
        assert running.samples()['configsync_http_refused_total{reason="connections"}'] >= 1
    finally:
        running.close()


def _half_closed(running: Running, data: bytes) -> bytes:
    sock = raw(running, data)
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(10)
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    sock.close()
    return reply


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/agents", "/metrics", "/agents/a",
                                  "/nowhere"])
def test_a_half_closed_peer_gets_its_answer(running: Running, path: str) -> None:
    # finding 4: `printf 'GET /healthz HTTP/1.0\r\n\r\n' | socat - TCP:...` got EOF, no answer
    reply = _half_closed(running, f"GET {path} HTTP/1.0\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.0 "), reply
    assert reply.split(b"\r\n\r\n", 1)[1]  # (a body: JSON, or the metrics)


def test_a_half_closed_webhook_and_long_poll_are_answered(running: Running) -> None:
    # finding 4: a signed webhook was logged 202 but its sender got nothing
    body = push()
    head = "".join(f"{k}: {v}\r\n" for k, v in github(body).items())
    reply = _half_closed(running, f"POST /webhook HTTP/1.1\r\nHost: x\r\n{head}"
                                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert reply.startswith(b"HTTP/1.1 202 ") and b'"accepted"' in reply
    # a long poll whose peer half-closed is answered at once (not after its 60 s)
    reply = _half_closed(running, b"GET /agents/a?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 304 ")


def test_a_half_closed_peer_is_answered_by_the_cli(running: Running) -> None:
    # finding 4 with the red team's own tool
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed")
    out = subprocess.run(["socat", "-t", "10", "-", f"TCP:{host}:{port}"],
                         input=b"GET /healthz HTTP/1.0\r\n\r\n", capture_output=True,
                         timeout=20, check=True).stdout
    assert out.startswith(b"HTTP/1.0 200 ") and out.endswith(b'{"status": "alive"}')


def test_the_listen_backlog_is_long(running: Running) -> None:
    # finding 5: `ss -ltn` showed Send-Q 16: a connect flood overflowed it
    import configsync.server as server

    if shutil.which("ss") is None:
        pytest.skip("ss is not installed")
    port = running.url.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert int(out[2]) == min(server.BACKLOG, somaxconn)  # (Send-Q of a listening socket)


def test_a_parser_error_never_echoes_the_request(running: Running,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # finding 6b: `X-Gitlab-Token: s3cret\x01` reached the log and the 400 body
    for data in (f"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Gitlab-Token: {SECRET}\x01\r\n"
                 f"Content-Length: 0\r\n\r\n".encode(),
                 f"GET /agents?token={SECRET}\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                 f"GET /agents HTTP/1.1\r\nHost: x\r\nX-{SECRET}: {'y' * 9000}\r\n\r\n".encode(),
                 f"GET /{SECRET}\x7f HTTP/1.1\r\n\r\n".encode()):
        sock = raw(running, data)
        reply = answer(sock)
        sock.settimeout(10)
        while chunk := sock.recv(65536):
            reply += chunk
        sock.close()
        assert reply.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), reply
        assert SECRET.encode() not in reply and b"s3cret" not in reply
        error = json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]
        assert len(error) < 100
    wait_until(lambda: "event=http_error" in caplog.text, timeout=10)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("configsync")]
    assert said and not [line for line in said if "s3cret" in line]


def test_stopping_ends_a_slow_body_at_once(
        tmp_path: Path, remote: Remote, redis_server: RedisServer) -> None:
    # finding 6c: SIGTERM waited ~10 s for a hostile slow webhook body
    running = Running(tmp_path, remote, redis_server)
    try:
        [sock] = _slow_bodies(running, ["127.0.0.2"])
        stopper = threading.Thread(target=running.server.stop)
        stopper.start()
        reply = answer(sock)
        assert reply.startswith(b"HTTP/1.1 408 ")  # (not "did not arrive within 10 s")
        stopper.join(20)
        sock.close()
    finally:
        running.close()


@pytest.mark.parametrize("line", [b"OPTIONS * HTTP/1.1", b"CONNECT x:443 HTTP/1.1",
                                  b"TRACE / HTTP/1.1", b"PUT /agents HTTP/1.1",
                                  b"DELETE /webhook HTTP/1.1", b"PATCH /healthz HTTP/1.1"])
def test_a_method_no_route_has_is_405(running: Running, line: bytes) -> None:
    # finding 6d: OPTIONS *, CONNECT and TRACE / were 404
    sock = raw(running, line + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    reply = answer(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: GET, HEAD, POST\r\n" in reply


@pytest.mark.parametrize("query", ["wait=1&wait=2", "wait=1&wait=1", "x=1&x=2", "a&a"])
def test_a_repeated_query_parameter_is_refused(running: Running, query: str) -> None:
    for path in ("/agents/a", "/agents", "/healthz"):
        status, _, body = running.get(f"{path}?{query}")
        assert status == 400 and "more than once" in json.loads(body)["error"]


@pytest.mark.parametrize("version", [b"HTTP/0.9", b"HTTP/0.1", b"HTTP/0.0"])
def test_http_0_9_is_refused(running: Running, version: bytes) -> None:
    # finding 6d: HTTP/0.9 got a `HTTP/0.9 200` status line
    sock = raw(running, b"GET /healthz " + version + b"\r\n\r\n")
    reply = answer(sock)
    sock.close()
    assert reply.startswith((b"HTTP/1.0 505 ", b"HTTP/1.0 400 ")), reply  # (aiohttp's or ours)


HOSTILE = "\u202e\u2028\u0085\u200b\u3164\U000e0041"


def test_the_read_api_writes_unsafe_characters_as_json_escapes(running: Running) -> None:
    """Red team's item 3: bidi and line-break characters from a commit message, an author, a
    prompt or an agent's id reach no reader raw; the body parses to what Redis holds, so the
    ETag (the checksum) still names it."""
    running.remote.commit_push(f"evil{HOSTILE}subject", {
        "agents/x.yaml": f"system_prompt: 'Hi{HOSTILE}there'\nmodel: gpt-4o\n"})
    running.daemon.request_sync()
    wait_until(lambda: loaded(running, "x", 1), timeout=10)
    stored = running.redis.hget("configsync:{test}:current", "x") or b""
    assert HOSTILE.encode() in stored  # Redis holds them raw; the API does not send them so
    for path in ("/agents", "/agents/x", "/agents/x/versions/1", "/agents/x%E2%80%AE"):
        status, headers, body = running.get(path)
        text = body.decode("ascii", "replace")
        assert all(c not in body.decode() for c in HOSTILE), path
        assert headers["Content-Type"].startswith("application/json"), path
        if path.startswith("/agents/x/") or path == "/agents/x":
            assert status == 200 and json.loads(body) == json.loads(stored)
            assert "\\u202e" in text and "\\u2028" in text and "\\udb40\\udc41" in text
            assert headers["ETag"] == f'"{json.loads(stored)["checksum"]}"'
        elif path != "/agents":
            assert status == 404 and json.loads(body) == {"error": "unknown agent 'x\\u202e'"}
