"""The embedded redis-server: a real process, killed and restarted like a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from configsync.embedded import RedisServer, redis_server_binary
from configsync.errors import ConfigsyncError


def test_binary_is_found() -> None:
    assert Path(redis_server_binary()).name == "redis-server"


def test_persistent_server_survives_a_crash(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "r", persist=True).start()
    try:
        assert server.port != 6379
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.kill()
        with pytest.raises(redis.ConnectionError):
            client.get("k")
        server.start()
        assert client.get("k") == b"v"  # appendonly: nothing lost
    finally:
        server.stop()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "a", persist=False) as first:
        clash = RedisServer(tmp_path / "b", port=first.port, persist=False)
        with pytest.raises(ConfigsyncError, match="did not start"):
            clash.start(timeout=2)
        clash.kill()
