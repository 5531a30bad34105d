"""Limits and usage when things go wrong: a gateway restarted, Redis gone and back, keys
changed under load. Real gateway processes, a real redis-server."""

from __future__ import annotations

import signal
import threading

import httpx
import pytest

from ..redis_server import RedisServer, redis_or_skip
from ..scripted_upstream import ScriptedUpstream
from ..servers import ServerProcess
from ..waiting import eventually

KEYS = """
[keys.app]
key = "sk-app-00000"
requests_per_minute = 1000000  # limited (so checked), but never reached by a loop of requests

[keys.admin]
key = "sk-admin-0000"
admin = true
"""
ADMIN = {"Authorization": "Bearer sk-admin-0000"}


@pytest.fixture(scope="module")
def engine():
    return ScriptedUpstream("fine").start()


def ask(server: ServerProcess, key: str = "sk-app-00000") -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]})


def requests_recorded(server: ServerProcess, key: str = "app") -> int:
    rows = httpx.get(f"{server.url}/admin/usage", headers=ADMIN, timeout=30).json()
    return sum(row["requests"] for row in rows if row["key"] == key)


def test_the_embedded_store_keeps_usage_across_a_restart(engine, tmp_path):
    (tmp_path / "keys.toml").write_text(KEYS)
    env = {"UPSTREAM_BASE_URL": engine.url, "API_KEYS_FILE": str(tmp_path / "keys.toml"),
           "USAGE_FILE": str(tmp_path / "usage.sqlite3")}
    first = ServerProcess(env, tmp_path, "first").start().wait_healthy()
    try:
        assert all(ask(first).status_code == 200 for _ in range(5))
    finally:
        first.stop()  # SIGTERM: the gateway writes what it has not written yet
    second = ServerProcess(env, tmp_path, "second").start().wait_healthy()
    try:
        assert ask(second).status_code == 200
        assert requests_recorded(second) == 6
    finally:
        second.stop()


@pytest.fixture
def own_redis(tmp_path):
    redis_or_skip()
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def store_up(server: ServerProcess) -> str:
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    return next(line.split()[-1] for line in metrics.splitlines() if line.startswith("vlserve_limits_store_up"))


def test_redis_gone_keeps_serving_with_local_limits_and_loses_no_usage(engine, own_redis, tmp_path):
    (tmp_path / "keys.toml").write_text(KEYS)
    gateway = ServerProcess({"UPSTREAM_BASE_URL": engine.url, "API_KEYS_FILE": str(tmp_path / "keys.toml"),
                             "REDIS_URL": own_redis.url, "REDIS_TIMEOUT_S": "0.3"}, tmp_path, "open").start()
    try:
        gateway.wait_healthy()
        assert ask(gateway).status_code == 200 and store_up(gateway) == "1.0"
        own_redis.stop()
        assert all(ask(gateway).status_code == 200 for _ in range(3))  # LIMITS_ON_STORE_ERROR=open
        assert store_up(gateway) == "0.0"
        assert ask(gateway, "sk-wrong-key").status_code == 401  # authentication never needs Redis
        assert "Redis" in gateway.logs() and "out of reach" in gateway.logs()
        own_redis.start()
        assert eventually(lambda: ask(gateway).status_code == 200 and store_up(gateway) == "1.0")
        # what was counted while Redis was away reached it when it came back
        assert eventually(lambda: requests_recorded(gateway) >= 6)
    finally:
        gateway.stop()


def test_redis_gone_under_closed_refuses_with_503_until_it_is_back(engine, own_redis, tmp_path):
    (tmp_path / "keys.toml").write_text(KEYS)
    gateway = ServerProcess({"UPSTREAM_BASE_URL": engine.url, "API_KEYS_FILE": str(tmp_path / "keys.toml"),
                             "REDIS_URL": own_redis.url, "REDIS_TIMEOUT_S": "0.3",
                             "LIMITS_ON_STORE_ERROR": "closed"}, tmp_path, "closed").start()
    try:
        gateway.wait_healthy()
        assert ask(gateway).status_code == 200
        own_redis.stop()
        refused = ask(gateway)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "limits_unavailable"
        assert refused.headers["retry-after"] == "1"
        own_redis.start()
        assert eventually(lambda: ask(gateway).status_code == 200)
    finally:
        gateway.stop()


def test_keys_reload_on_sighup_and_on_change_without_losing_a_request(engine, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(KEYS)
    gateway = ServerProcess({"UPSTREAM_BASE_URL": engine.url, "API_KEYS_FILE": str(keys),
                             "USAGE_FILE": str(tmp_path / "usage.sqlite3")}, tmp_path, "reload").start()
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                resp = client.post(f"{gateway.url}/v1/chat/completions",
                                   headers={"Authorization": "Bearer sk-app-00000"},
                                   json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]})
                statuses.append(resp.status_code)

    try:
        gateway.wait_healthy()
        worker = threading.Thread(target=load)
        worker.start()
        assert ask(gateway, "sk-new-00000").status_code == 401
        keys.write_text(KEYS + '\n[keys.new]\nkey = "sk-new-00000"\n')
        gateway.send_signal(signal.SIGHUP)
        assert eventually(lambda: ask(gateway, "sk-new-00000").status_code == 200)
        keys.write_text(KEYS + '\n[keys.new]\nkey = "sk-new-00000"\nrequests_per_minute = "lots"\n')
        gateway.send_signal(signal.SIGHUP)
        assert eventually(lambda: "was not reloaded" in gateway.logs())
        assert ask(gateway, "sk-new-00000").status_code == 200  # the good keys stay in force
        keys.write_text(KEYS)  # and a changed file is read without a signal
        assert eventually(lambda: ask(gateway, "sk-new-00000").status_code == 401)
        stop.set()
        worker.join(30)
        assert statuses and set(statuses) == {200}
    finally:
        stop.set()
        gateway.stop()
