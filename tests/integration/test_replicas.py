"""Two real upstream replicas behind a gateway: kill one during a load run, bring it back."""

from __future__ import annotations

import os
import signal
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import httpx
import pytest

from ..servers import ServerProcess, free_port
from ..waiting import eventually

pytestmark = pytest.mark.timeout(240)


def ask(url: str) -> int:
    try:
        return httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": "qwen3-vl-tiny-random", "max_tokens": 24, "temperature": 1.0,
            "messages": [{"role": "user", "content": "hello"}]}).status_code
    except httpx.HTTPError:
        return -1


def served_by(engine: ServerProcess) -> int:
    return engine.log_path.read_text().count('"route": "/v1/chat/completions"')


def all_ready(gateway) -> bool:
    return all(r["ready"] for r in httpx.get(f"{gateway.url}/health").json()["replicas"])


def test_kill_one_replica_under_load_then_it_rejoins(tiny_model_dir, tmp_path):
    ports = [free_port(), free_port()]
    engines = [ServerProcess({"MODEL_PATH": str(tiny_model_dir)}, tmp_path, f"engine{i}", port=p).start()
               for i, p in enumerate(ports)]
    gateway = ServerProcess({"UPSTREAM_BASE_URL": ",".join(f"http://127.0.0.1:{p}" for p in ports)},
                            tmp_path, "gateway").start()
    try:
        for server in (*engines, gateway):
            server.wait_healthy()
        assert eventually(lambda: all_ready(gateway)), "the gateway never found both replicas"

        with ThreadPoolExecutor(4) as pool:
            before = list(pool.map(lambda _: ask(gateway.url), range(12)))
            futures = [pool.submit(ask, gateway.url) for _ in range(8)]
            wait(futures, return_when=FIRST_COMPLETED)  # the load is flowing
            os.kill(engines[0]._proc.pid, signal.SIGKILL)  # in the middle of it
            during = [f.result() for f in futures]
            after = list(pool.map(lambda _: ask(gateway.url), range(16)))

        assert before == [200] * 12
        assert served_by(engines[0]) > 0 and served_by(engines[1]) > 0  # both took load
        failed = [s for s in during if s != 200]
        assert len(failed) <= 4 and all(s in (502, 503) for s in failed)  # only what was in flight on it
        assert after == [200] * 16  # later requests went to the survivor

        engines[0] = ServerProcess({"MODEL_PATH": str(tiny_model_dir)}, tmp_path, "engine0-again",
                                   port=ports[0]).start().wait_healthy()
        assert eventually(lambda: all_ready(gateway)), "the restarted replica did not rejoin"
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(lambda _: ask(gateway.url), range(12))) == [200] * 12
        assert served_by(engines[0]) > 0  # it takes requests again
    finally:
        gateway.stop()
        for engine in engines:
            engine.stop()


def test_replicas_serving_different_models_each_get_only_their_own(tiny_model_dir, tmp_path):
    ports = {"instruct": free_port(), "thinking": free_port()}
    engines = {name: ServerProcess({"MODEL_PATH": str(tiny_model_dir), "SERVED_MODEL_NAME": name}, tmp_path,
                                   f"engine-{name}", port=port).start() for name, port in ports.items()}
    gateway = ServerProcess({"UPSTREAM_BASE_URL": ",".join(f"http://127.0.0.1:{p}" for p in ports.values())},
                            tmp_path, "gateway").start()
    try:
        for server in (*engines.values(), gateway):
            server.wait_healthy()
        assert eventually(lambda: all_ready(gateway)), "the gateway never found both replicas"
        assert sorted(m["id"] for m in httpx.get(f"{gateway.url}/v1/models").json()["data"]) == ["instruct", "thinking"]

        def ask_for(model: str) -> int:
            return httpx.post(f"{gateway.url}/v1/chat/completions", timeout=30, json={
                "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}).status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(ask_for, ["instruct", "thinking"] * 6))
        assert statuses == [200] * 12
        for name, engine in engines.items():
            log = engine.log_path.read_text()
            other = "thinking" if name == "instruct" else "instruct"
            assert log.count(f'"model": "{name}"') == 6 and f'"model": "{other}"' not in log
        unknown = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=30, json={
            "model": "nope", "messages": [{"role": "user", "content": "hi"}]})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    finally:
        gateway.stop()
        for engine in engines.values():
            engine.stop()
