"""Named keys with limits, enforced exactly by three real gateways sharing one real Redis.

Admission times are known to a client only as lying between a request's sending and its
answer; the checks count, for every 60-second span, the admitted requests whose whole
[sent, answered] interval lies inside it: those were certainly admitted inside it, so an
exact limiter never lets that count pass the limit (and the count cannot be inflated by
the client's own latency).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import textwrap
import time

import httpx
import openai
import pytest

from ..scripted_upstream import ScriptedUpstream
from ..servers import ServerProcess
from ..waiting import eventually

KEYS_TOML = textwrap.dedent("""
    [defaults]
    requests_per_minute = 10000

    [keys.team]
    key = "sk-team-0000"
    requests_per_minute = 40

    [keys.tokens]
    key = "sk-tokens-0000"
    tokens_per_minute = 6000

    [keys.webui]
    key = "sk-webui-0000"
    user_header = "X-User"
    [keys.webui.per_user]
    requests_per_minute = 3

    [keys.plain]
    key = "sk-plain-0000"

    [keys.pair]
    key = "sk-pair-0000"
    max_concurrent = 2

    [keys.photos]
    key = "sk-photos-000"
    images_per_day = 3

    [keys.elsewhere]
    key = "sk-elsewhere-0"
    models = ["another-model"]

    [keys.admin]
    key = "sk-admin-0000"
    admin = true
""")
LOAD_S = 65  # longer than the window: the first minute's requests leave it while clients press
PNG_1PX = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElF"
           "TkSuQmCC")


@pytest.fixture(scope="module")
def engine():
    return ScriptedUpstream("a scripted answer of several words", uses_max_tokens=True).start()


@pytest.fixture(scope="module")
def gateways(engine, redis_server, tmp_path_factory):
    redis_server.flush()
    logs = tmp_path_factory.mktemp("shared-limits")
    keys = logs / "keys.toml"
    keys.write_text(KEYS_TOML)
    env = {"UPSTREAM_BASE_URL": engine.url, "API_KEYS_FILE": str(keys), "REDIS_URL": redis_server.url}
    servers = [ServerProcess({**env, "USAGE_FILE": str(logs / f"{n}.sqlite3")}, logs, f"gateway-{n}").start()
               for n in range(3)]
    try:
        yield [server.wait_healthy() for server in servers]
    finally:
        for server in servers:
            server.stop()


def usage(url: str) -> list[dict]:
    return httpx.get(f"{url}/admin/usage", headers={"Authorization": "Bearer sk-admin-0000"}, timeout=30).json()


def chat(key: str, **extra) -> dict:
    return {"headers": {"Authorization": f"Bearer {key}"},
            "json": {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], **extra}}


def most_in_any_minute(admitted: list[tuple[float, float, int]]) -> int:
    """The largest weight of requests certainly admitted within one 60-second span."""
    return max((sum(w for s, r, w in admitted if s >= start and r < start + 60) for start, _, _ in admitted),
               default=0)


async def press(urls: list[str], key: str, clients: int, until: float, max_tokens=None) -> tuple[list, list]:
    """`clients` clients asking in a loop until `until`, round robin over the gateways;
    (admitted as (sent, answered, tokens), refusals as responses)."""
    admitted, refused = [], []

    async def client(number: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(number)
        turn = number
        while time.monotonic() < until:
            turn += 1
            extra = {"max_tokens": rng.randint(*max_tokens)} if max_tokens else {}
            sent = time.monotonic()
            resp = await http.post(f"{urls[turn % len(urls)]}/v1/chat/completions", **chat(key, **extra))
            if resp.status_code == 200:
                admitted.append((sent, time.monotonic(), resp.json()["usage"]["total_tokens"]))
                continue
            refused.append(resp)
            # A polite client waits as told, up to a second (so every client keeps pressing).
            await asyncio.sleep(min(float(resp.headers.get("retry-after-ms", 1000)) / 1000, 1.0))

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(n, http) for n in range(clients)))
    return admitted, refused


def assert_polite_429(resp: httpx.Response, unit: str) -> None:
    assert resp.status_code == 429, resp.text
    error = resp.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert f"{unit} per minute reached for key" in error["message"] and "resets in" in error["message"]
    assert int(resp.headers["retry-after"]) >= 1 and int(resp.headers["retry-after-ms"]) > 0
    assert resp.headers[f"x-ratelimit-remaining-{unit}"] == "0"
    assert resp.headers[f"x-ratelimit-limit-{unit}"] and resp.headers[f"x-ratelimit-reset-{unit}"]


async def test_three_gateways_never_admit_more_than_a_minute_allows(gateways):
    """48 clients on one key with 40 requests a minute, and 16 on a key with 6,000 tokens
    a minute asking for 100-1,500 tokens each, for over a minute, across three gateways."""
    urls = [gateway.url for gateway in gateways]
    until = time.monotonic() + LOAD_S
    (requests_in, requests_out), (tokens_in, tokens_out) = await asyncio.gather(
        press(urls, "sk-team-0000", 48, until), press(urls, "sk-tokens-0000", 16, until, max_tokens=(100, 1500)))
    assert most_in_any_minute([(s, r, 1) for s, r, _ in requests_in]) <= 40
    assert len(requests_in) > 40  # the window moved on: the first minute's requests left it
    assert most_in_any_minute(tokens_in) <= 6000
    assert sum(tokens for _, _, tokens in tokens_in) > 6000
    assert requests_out and tokens_out
    for resp in requests_out:
        assert_polite_429(resp, "requests")
    for resp in tokens_out:
        assert_polite_429(resp, "tokens")

    def totals() -> tuple[int, int, int]:
        rows = usage(urls[0])
        team = [row for row in rows if row["key"] == "team"]
        tokens = [row for row in rows if row["key"] == "tokens"]
        return (sum(row["requests"] for row in team), sum(row["errors"]["4xx"] for row in team),
                sum(row["prompt_tokens"] + row["completion_tokens"] for row in tokens))

    # Each gateway settles in batches as requests end: the last ones arrive a moment later.
    counted = (len(requests_in) + len(requests_out), len(requests_out), sum(t for *_, t in tokens_in))
    assert eventually(lambda: totals() == counted), (totals(), counted)


def test_an_admitted_answer_says_what_is_left(gateways):
    client = openai.OpenAI(base_url=f"{gateways[0].url}/v1", api_key="sk-webui-0000", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-User": "left"})
    assert raw.headers["x-ratelimit-limit-requests"] == "3"  # the user's limit: the tighter one
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    assert raw.parse().choices[0].message.content


def test_per_user_limits_hold_across_gateways_and_only_the_trusted_key_names_users(gateways):
    for n in range(3):
        resp = httpx.post(f"{gateways[n].url}/v1/chat/completions",
                          headers={"Authorization": "Bearer sk-webui-0000", "X-User": "alice"}, json=chat("x")["json"])
        assert resp.status_code == 200, resp.text
    refused = httpx.post(f"{gateways[1].url}/v1/chat/completions",
                         headers={"Authorization": "Bearer sk-webui-0000", "X-User": "alice"}, json=chat("x")["json"])
    assert refused.status_code == 429
    assert "user 'alice' of key 'webui'" in refused.json()["error"]["message"]
    bob = httpx.post(f"{gateways[2].url}/v1/chat/completions",
                     headers={"Authorization": "Bearer sk-webui-0000", "X-User": "bob"}, json=chat("x")["json"])
    assert bob.status_code == 200
    # Another key cannot claim a user: its header is ignored, its requests are the key's own.
    for _ in range(4):
        resp = httpx.post(f"{gateways[0].url}/v1/chat/completions",
                          headers={"Authorization": "Bearer sk-plain-0000", "X-User": "alice"}, json=chat("x")["json"])
        assert resp.status_code == 200

    def alice() -> tuple[int, int]:
        rows = [row for row in usage(gateways[0].url) if row["key"] == "webui" and row["user"] == "alice"]
        return sum(row["requests"] for row in rows), sum(row["errors"]["4xx"] for row in rows)

    assert eventually(lambda: alice() == (4, 1)), alice()
    assert {row["user"] for row in usage(gateways[0].url) if row["key"] == "plain"} == {None}


def test_max_concurrent_counts_streams_on_every_gateway_until_they_end(engine, gateways):
    httpx.post(f"{engine.url}/stand-in/hold")
    opened = []
    try:
        for gateway in gateways[:2]:
            stream = httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=30,
                                  **chat("sk-pair-0000", stream=True))
            resp = stream.__enter__()
            lines = resp.iter_lines()  # kept: a dropped iterator closes the connection
            opened.append((stream, lines))
            assert resp.status_code == 200
            next(lines)  # the stream is under way, held by the engine
        third = httpx.post(f"{gateways[2].url}/v1/chat/completions", **chat("sk-pair-0000"))
        assert third.status_code == 429
        assert "Limit of 2 requests at once reached for key 'pair'" in third.json()["error"]["message"]
    finally:
        httpx.post(f"{engine.url}/stand-in/release")
        for stream, _ in opened:
            stream.__exit__(None, None, None)
    assert eventually(lambda: httpx.post(f"{gateways[2].url}/v1/chat/completions",
                                         **chat("sk-pair-0000")).status_code == 200)


def test_a_stopped_stream_is_logged_as_cancelled_with_its_tokens(engine, gateways):
    gateway = gateways[0]
    httpx.post(f"{engine.url}/stand-in/hold")
    try:
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=30,
                          headers={"X-Request-ID": "stopped-stream-1", "Authorization": "Bearer sk-plain-0000"},
                          json=chat("x", stream=True)["json"]) as resp:
            assert resp.status_code == 200
            next(resp.iter_lines())  # the user presses Stop after the first words
    finally:
        httpx.post(f"{engine.url}/stand-in/release")

    def logged() -> dict | None:
        for line in gateway.log_path.read_text().splitlines():
            if '"stopped-stream-1"' in line:
                return json.loads(line)
        return None

    assert eventually(lambda: logged() is not None)
    line = logged()
    assert line["status"] == 499 and line["key"] == "plain"
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'vlserve_requests_total{key="plain",route="/v1/chat/completions",status="499"}' in metrics


def test_images_per_day_is_a_quota(gateways):
    def ask(images: int) -> httpx.Response:
        content = [{"type": "image_url", "image_url": {"url": PNG_1PX}}] * images + [{"type": "text", "text": "?"}]
        return httpx.post(f"{gateways[0].url}/v1/chat/completions", headers={"Authorization": "Bearer sk-photos-000"},
                          json={"model": "scripted", "messages": [{"role": "user", "content": content}]}, timeout=30)

    assert ask(2).status_code == 200
    refused = ask(2)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    assert "3 images per day" in refused.json()["error"]["message"] and "00:00 UTC" in refused.json()["error"]["message"]
    assert ask(0).status_code == 200 and ask(1).status_code == 200
    # usage counts the images that reached the engine, not the refused request's
    assert eventually(lambda: sum(row["images"] for row in usage(gateways[0].url) if row["key"] == "photos") == 3)


def test_a_key_uses_and_sees_only_the_models_it_is_allowed(gateways):
    resp = httpx.post(f"{gateways[0].url}/v1/chat/completions", **chat("sk-elsewhere-0"))
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "model_not_allowed" and "another-model" in resp.json()["error"]["message"]
    listed = openai.OpenAI(base_url=f"{gateways[0].url}/v1", api_key="sk-elsewhere-0").models.list()
    assert listed.data == []
    assert [m.id for m in openai.OpenAI(base_url=f"{gateways[0].url}/v1", api_key="sk-plain-0000").models.list()] \
        == ["scripted"]


def test_usage_is_for_admin_keys_as_json_and_csv(gateways):
    url = f"{gateways[1].url}/admin/usage"
    assert httpx.get(url, headers={"Authorization": "Bearer sk-plain-0000"}).status_code == 403
    assert httpx.get(url).status_code == 401
    admin = {"Authorization": "Bearer sk-admin-0000"}
    bad = httpx.get(url, params={"start": "yesterday"}, headers=admin)
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.json()["error"]["message"]
    csv_text = httpx.get(url, headers={**admin, "Accept": "text/csv"}).text
    assert csv_text.splitlines()[0] == ("day,key,user,model,requests,prompt_tokens,completion_tokens,images,"
                                       "errors_4xx,errors_5xx")
    assert "sk-" not in csv_text  # names, never secrets


def test_vlserve_usage_prints_the_table_for_an_admin_key(gateways):
    run = [sys.executable, "-m", "vlserve.cli", "usage", "--server", gateways[2].url]
    shown = subprocess.run([*run, "--api-key", "sk-admin-0000"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "webui" in shown.stdout and "alice" in shown.stdout and "requests" in shown.stdout
    refused = subprocess.run([*run, "--api-key", "sk-plain-0000"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "not an admin key" in refused.stderr
