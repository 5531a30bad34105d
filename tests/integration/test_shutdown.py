"""SIGTERM: streams still open when the drain time is up end with a final error event,
and the process exits 0. (That in-flight requests finish within the drain time is
tested on the launcher, tests/integration/test_launcher.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from ..servers import ServerProcess, free_port

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.timeout(90)


def test_drain_then_final_error_events(tmp_path):
    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(port),
                                 "--chunks", "3000", "--delay-ms", "10"])  # a 30 s answer
    gateway = ServerProcess({"UPSTREAM_BASE_URL": f"http://127.0.0.1:{port}", "DRAIN_TIMEOUT_S": "1.5"},
                            tmp_path, "gateway").start()
    try:
        gateway.wait_healthy()
        results = {}
        streaming = threading.Event()

        def long_stream():
            body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "x"}]}
            with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=30) as resp:
                chunks = resp.iter_bytes()
                results["stream"] = next(chunks)
                streaming.set()
                results["stream"] += b"".join(chunks)

        threads = [threading.Thread(target=long_stream)]
        threads[0].start()
        assert streaming.wait(30), "the stream never started"
        gateway._proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        for thread in threads:
            thread.join(20)
        assert gateway._proc.wait(20) == 0
        assert time.monotonic() - started < 8

        last = [e for e in results["stream"].split(b"\n\n") if e.strip()][-1]
        error = json.loads(last[6:])["error"]
        assert error["code"] == "engine_unavailable" and "shutting down" in error["message"]
        assert results["stream"].count(b"tok") > 10  # what was generated before still arrived
    finally:
        gateway.stop()
        upstream.terminate()
        upstream.wait(10)
