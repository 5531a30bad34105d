"""Hostile inputs against real gateways on 127.0.0.1: nothing private is fetched, nothing is
a 5xx, and no one request can stall the service or blow up its memory."""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from tests.host_spellings import all_spellings, dotted

from ..servers import ServerProcess
from ..waiting import eventually
from .conftest import png_bytes

pytestmark = pytest.mark.timeout(240)


class _Canary(BaseHTTPRequestHandler):
    hits: dict[str, int]

    def do_GET(self):
        self.hits[self.server.server_address[0]] += 1
        body = png_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def canary():
    """One port on 127.0.0.1 (private: must never be reached) and 127.0.0.2 (allowed)."""
    hits = {"127.0.0.1": 0, "127.0.0.2": 0}
    handler = type("Canary", (_Canary,), {"hits": hits})
    private = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    allowed = ThreadingHTTPServer(("127.0.0.2", private.server_address[1]), handler)
    for server in (private, allowed):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield private.server_address[1], hits
    for server in (private, allowed):
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def guarded(tiny_model_dir, tmp_path_factory):
    """A gateway on the local engine whose only allowed private host is 127.0.0.2."""
    logs = tmp_path_factory.mktemp("hostile")
    server = ServerProcess({"MODEL_PATH": str(tiny_model_dir), "SERVED_MODEL_NAME": "tiny",
                            "MEDIA_ALLOW_PRIVATE_HOSTS": "127.0.0.2", "MEDIA_FETCH_TIMEOUT_S": "3"},
                           logs, "guarded").start()
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


def chat_with_image(server, url: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", timeout=30, json={
        "model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]}]})


def test_no_spelling_of_a_private_address_is_fetched_and_the_allowed_one_is(guarded, canary):
    port, hits = canary
    for host in all_spellings("127.0.0.1"):
        resp = chat_with_image(guarded, f"http://{host}:{port}/x.png")
        assert resp.status_code == 400, (host, resp.text)
        assert resp.json()["error"]["code"] in ("image_url_refused", "image_fetch_failed"), host
    assert hits["127.0.0.1"] == 0
    for host in ["127.0.0.2", dotted("127.0.0.2", ["\u3002"] * 3, [True] * 4)]:  # the control
        assert chat_with_image(guarded, f"http://{host}:{port}/x.png").status_code == 200, host
    assert hits["127.0.0.2"] == 2 and hits["127.0.0.1"] == 0


def test_extract_never_fetches_a_schemas_ref(guarded, canary):
    port, hits = canary
    before = dict(hits)
    for host in ("127.0.0.1", "127.0.0.2"):
        schema = {"type": "object", "properties": {"a": {"$ref": f"http://{host}:{port}/schema.json"}}}
        resp = httpx.post(f"{guarded.url}/analyze", timeout=30, json={
            "task": "extract", "image": base64.b64encode(png_bytes()).decode(), "schema": schema})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "schema", resp.text
    missing = {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}
    resp = httpx.post(f"{guarded.url}/analyze", timeout=30, json={
        "task": "extract", "image": base64.b64encode(png_bytes()).decode(), "schema": missing})
    assert resp.status_code == 400 and "#/definitions/missing" in resp.json()["error"]["message"]
    assert hits == before


def test_a_20_mb_prompt_is_refused_at_once_while_health_keeps_answering(gateway):
    prompt = "lorem ipsum dolor " * (20 * 1024 * 1024 // 18)
    health_latencies: list[float] = []
    stop = threading.Event()

    def poll_health():
        while not stop.is_set():
            started = time.monotonic()
            httpx.get(f"{gateway.url}/health", timeout=10)
            health_latencies.append(time.monotonic() - started)
            time.sleep(0.05)

    poller = threading.Thread(target=poll_health, daemon=True)
    poller.start()
    try:
        started = time.monotonic()
        resp = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=60, json={
            "model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": prompt}]})
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        poller.join(10)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "context_length_exceeded", (resp.text, gateway.logs())
    assert elapsed < 3, elapsed  # sending and parsing 20 MB included; tokenising it took ~50 s
    assert health_latencies and max(health_latencies) < 1.0, health_latencies


def test_an_image_outside_a_user_message_is_a_400_that_says_where_images_go(gateway):
    image = {"type": "image_url", "image_url": {"url": base64.b64encode(png_bytes()).decode()}}
    for role in ("system", "assistant"):
        resp = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=30, json={
            "model": "tiny", "max_tokens": 2,
            "messages": [{"role": role, "content": [image, {"type": "text", "text": "x"}]},
                         {"role": "user", "content": "hi"}]})
        assert resp.status_code == 400 and "user messages" in resp.json()["error"]["message"], resp.text


@pytest.mark.parametrize("size", [(20000, 100), (100, 19000)])
def test_long_thin_images_within_200_to_1_are_answered(gateway, size):
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 90, 200)).save(buf, "PNG")
    resp = chat_with_image(gateway, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    assert resp.status_code == 200, resp.text


def test_a_trailing_slash_is_a_404_and_nothing_reflects_the_host_header(gateway):
    for path in ("/v1/models/", "/v1/chat/completions/", "/nowhere/"):
        resp = httpx.get(f"{gateway.url}{path}", headers={"Host": "evil.example"}, follow_redirects=False, timeout=10)
        assert resp.status_code in (404, 405) and "location" not in resp.headers, path
        assert set(resp.json()["error"]) >= {"message", "code"}


# --- memory ---------------------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def png_of_zeros(size, mode="RGBA") -> str:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


PEAK_GROWTH_BOUND_MB = 512
SETTLE_MARGIN_MB = 64


def test_a_burst_of_hostile_images_stays_within_a_memory_bound_and_memory_returns(guarded):
    pid = guarded._proc.pid
    # ~150 KB that decodes to 196 MB (343 MB with its RGB copy): one fits the budget of 512 MiB
    # (MEDIA_DECODE_MEMORY_BYTES), two do not, so they take turns.
    huge = png_of_zeros((7000, 7000))
    eight = [png_of_zeros((4000, 4000), "RGB")] * 8  # more than the context holds
    samples: list[float] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(rss_mb(pid))
            time.sleep(0.01)

    for _ in range(3):  # warm up the paths once, so allocations that stay (code, caches) are in the baseline
        chat_with_image(guarded, "data:image/png;base64," + png_of_zeros((600, 600)))
    baseline = rss_mb(pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        def huge_request(_):
            return chat_with_image(guarded, "data:image/png;base64," + huge).status_code

        def eight_request(_):
            content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + e}} for e in eight]
            return httpx.post(f"{guarded.url}/v1/chat/completions", timeout=60, json={
                "model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": content}]}).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(huge_request, range(4))) + list(pool.map(eight_request, range(2)))
    finally:
        stop.set()
        sampler.join(5)
    assert statuses[:4] == [200] * 4 and statuses[4:] == [400, 400]
    peak_growth = max(samples) - baseline
    assert peak_growth < PEAK_GROWTH_BOUND_MB, f"peak RSS grew {peak_growth:.0f} MB over {baseline:.0f} MB"
    assert eventually(lambda: rss_mb(pid) - baseline <= SETTLE_MARGIN_MB, timeout=10), f"RSS stayed {rss_mb(pid) - baseline:.0f} MB above baseline"
