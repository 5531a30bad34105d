"""The limit rules, the same in the embedded store and in a real Redis (one Lua script).

Rules that need time to pass run on the embedded store with a clock the test turns; the
rest run on both stores.
"""

from __future__ import annotations

import asyncio
from dataclasses import astuple, fields
from datetime import UTC, datetime

import pytest

from vlserve.tenancy.keys import Limits
from vlserve.tenancy.limits import Charge, LimitKind, Subject
from vlserve.tenancy.memory_store import MemoryLimits
from vlserve.tenancy.redis_store import RedisStore
from vlserve.tenancy.usage import UsageCounts, UsageFile, delta_for

LEASE_S = 600.0
REQUEST = Charge(request=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    if request.param == "memory":
        yield MemoryLimits(Clock())
        return
    shared = RedisStore(request.getfixturevalue("redis_url"), timeout_s=2)
    yield shared
    await shared.close()


def key(**limits) -> Subject:
    return Subject("team", "key 'team'", Limits(**limits))


async def take(store, subjects, charge, ticket="t", entry="t:0"):
    return await store.check(ticket, entry, subjects if isinstance(subjects, list) else [subjects], charge, LEASE_S)


async def test_requests_per_minute_admits_the_limit_then_refuses_with_when(store):
    subject = key(requests_per_minute=3)
    remaining = []
    for n in range(3):
        verdict = await take(store, subject, REQUEST, ticket=f"t{n}")
        assert verdict.admitted
        remaining.append(verdict.windows.requests_remaining)
    assert remaining == [2, 1, 0]
    refused = (await take(store, subject, REQUEST, ticket="t4")).refusal
    assert refused is not None and refused.kind is LimitKind.REQUESTS and refused.limit == 3
    assert 0 < refused.retry_after_s <= 60
    assert "Limit of 3 requests per minute reached for key 'team'" in refused.message()


async def test_checks_asked_at_once_are_each_exact(store):
    """Redis gets the checks of one event-loop round in one round trip: still one at a time
    inside it, so a burst is admitted up to the limit and not one more."""
    subject = key(requests_per_minute=10, max_concurrent=12)
    verdicts = await asyncio.gather(*(take(store, subject, REQUEST, ticket=f"b{n}") for n in range(30)))
    assert sum(verdict.admitted for verdict in verdicts) == 10
    assert sorted(v.windows.requests_remaining for v in verdicts if v.admitted) == list(range(10))
    assert {v.refusal.kind for v in verdicts if not v.admitted} == {LimitKind.REQUESTS}


async def test_redis_loads_its_scripts_again_when_it_forgot_them(redis_url):
    """A Redis restarted (or SCRIPT FLUSH) knows no scripts: checks and settles load them."""
    import redis.asyncio as aioredis

    store, raw = RedisStore(redis_url, timeout_s=5), aioredis.Redis.from_url(redis_url)
    subject = key(requests_per_minute=5, max_concurrent=1)
    assert (await take(store, subject, REQUEST, ticket="a")).admitted
    await raw.script_flush()
    await store.settle("a", [subject], {}, True)
    await raw.script_flush()
    verdict = await take(store, subject, REQUEST, ticket="b")
    assert verdict.admitted and verdict.windows.requests_remaining == 3  # "a" gave its place back
    await store.close()
    await raw.aclose()


async def test_a_check_is_all_or_nothing_across_key_and_user(store):
    team = key(requests_per_minute=10)
    alice = Subject("team\x1falice", "user 'alice' of key 'team'", Limits(requests_per_minute=1))
    bob = Subject("team\x1fbob", "user 'bob' of key 'team'", Limits(requests_per_minute=1))
    assert (await take(store, [team, alice], REQUEST, ticket="a1")).admitted
    refused = (await take(store, [team, alice], REQUEST, ticket="a2")).refusal
    assert refused is not None and refused.subject == alice
    verdict = await take(store, [team, bob], REQUEST, ticket="b1")
    assert verdict.admitted
    # the key counted alice's first and bob's: the refused request took nothing from it
    assert (await take(store, team, REQUEST, ticket="k")).windows.requests_remaining == 10 - 3


async def test_tokens_are_reserved_then_settled_to_what_was_used(store):
    subject = key(tokens_per_minute=100)
    assert (await take(store, subject, Charge(tokens=60), entry="e1")).admitted
    refused = (await take(store, subject, Charge(tokens=60), entry="e2")).refusal
    assert refused is not None and refused.kind is LimitKind.TOKENS and not refused.too_big
    await store.settle("t", [subject], {"e1": 10}, False)
    verdict = await take(store, subject, Charge(tokens=60), entry="e3")
    assert verdict.admitted and verdict.windows.tokens_remaining == 100 - 70
    too_big = (await take(store, subject, Charge(tokens=101), entry="e4")).refusal
    assert too_big is not None and too_big.too_big and "make it smaller" in too_big.message()


async def test_max_concurrent_counts_requests_until_they_are_released(store):
    subject = key(max_concurrent=2)
    assert (await take(store, subject, REQUEST, ticket="r1")).admitted
    assert (await take(store, subject, REQUEST, ticket="r2")).admitted
    refused = (await take(store, subject, REQUEST, ticket="r3")).refusal
    assert refused is not None and refused.kind is LimitKind.CONCURRENT
    await store.settle("r1", [subject], {}, True)
    assert (await take(store, subject, REQUEST, ticket="r3")).admitted


async def test_images_per_day_is_a_quota_until_midnight(store):
    subject = key(images_per_day=5)
    assert (await take(store, subject, Charge(images=3), entry="i1")).admitted
    refused = (await take(store, subject, Charge(images=3), entry="i2")).refusal
    assert refused is not None and refused.kind is LimitKind.IMAGES and refused.kind.code == "insufficient_quota"
    assert 0 < refused.retry_after_s <= 86_400 and "00:00 UTC" in refused.message()
    assert (await take(store, subject, Charge(images=2), entry="i3")).admitted


async def test_the_window_slides_exactly_sixty_seconds():
    clock = Clock()
    store = MemoryLimits(clock)
    subject = key(requests_per_minute=2)
    assert (await take(store, subject, REQUEST, ticket="a")).admitted
    clock.now += 30
    assert (await take(store, subject, REQUEST, ticket="b")).admitted
    clock.now += 29.9
    refusal = (await take(store, subject, REQUEST, ticket="c")).refusal
    assert refusal is not None and refusal.retry_after_s == pytest.approx(0.1)
    clock.now += 0.1  # the first left the window: one place, not two
    assert (await take(store, subject, REQUEST, ticket="c")).admitted
    assert not (await take(store, subject, REQUEST, ticket="d")).admitted


async def test_tokens_free_up_as_their_reservations_leave_the_window():
    clock = Clock()
    store = MemoryLimits(clock)
    subject = key(tokens_per_minute=100)
    await take(store, subject, Charge(tokens=40), entry="e1")
    clock.now += 10
    await take(store, subject, Charge(tokens=40), entry="e2")
    refusal = (await take(store, subject, Charge(tokens=50), entry="e3")).refusal
    assert refusal.retry_after_s == pytest.approx(50)  # when e1's 40 leave, 40 + 50 fit
    clock.now += 50
    assert (await take(store, subject, Charge(tokens=50), entry="e3")).admitted


async def test_a_place_a_dead_gateway_never_gave_back_ends_with_its_lease():
    clock = Clock()
    store = MemoryLimits(clock)
    subject = key(max_concurrent=1)
    assert (await take(store, subject, REQUEST, ticket="lost")).admitted
    assert not (await take(store, subject, REQUEST, ticket="next")).admitted
    clock.now += LEASE_S
    assert (await take(store, subject, REQUEST, ticket="next")).admitted


async def test_redis_usage_rows_add_up_per_key_user_model_and_day(redis_url):
    store = RedisStore(redis_url, timeout_s=2)
    for n, status in enumerate((200, 200, 429, 502)):
        await store.settle(f"t{n}", [], {}, False, delta_for("team", "alice", "m", status, 10, 5, 1))
    await store.settle("t4", [], {}, False, delta_for("team", None, "m", 200, 1, 1, 0))
    await store.settle("t4", [], {}, False, delta_for("team", None, "m", 200, 1, 1, 0))  # sent twice: once
    today = datetime.now(UTC).date()
    rows = await store.usage_rows(today, today)
    await store.close()
    alice = next(counts for where, counts in rows.items() if where.user == "alice")
    assert (alice.requests, alice.prompt_tokens, alice.completion_tokens, alice.images) == (4, 40, 20, 4)
    assert (alice.errors_4xx, alice.errors_5xx) == (1, 1)
    assert sum(counts.requests for counts in rows.values()) == 5


async def test_the_usage_file_keeps_usage_across_a_restart(tmp_path):
    path = tmp_path / "usage.sqlite3"
    first = UsageFile(path)
    first.add(delta_for("team", None, "m", 200, 10, 5, 2))
    first.add(delta_for("team", None, "m", 499, 3, 1, 0))  # a client that left is not an error
    await first.close()
    second = UsageFile(path)  # the next gateway process
    second.add(delta_for("team", None, "m", 200, 1, 1, 0))
    today = datetime.now(UTC).date()
    rows = await second.rows(today, today)
    await second.close()
    (counts,) = rows.values()
    assert (counts.requests, counts.prompt_tokens, counts.completion_tokens, counts.images) == (3, 14, 7, 2)
    assert counts.errors_4xx == 0


async def test_users_who_come_and_go_leave_nothing_behind():
    from vlserve.tenancy.memory_store import SWEEP_EVERY

    clock = Clock()
    store = MemoryLimits(clock)
    for n in range(SWEEP_EVERY - 1):
        await take(store, Subject(f"k\x1fuser{n}", "u", Limits(requests_per_minute=5)), REQUEST, ticket=f"t{n}")
    assert store.subjects_held == SWEEP_EVERY - 1
    clock.now += 61  # their requests left the window
    await take(store, key(requests_per_minute=5), REQUEST, ticket="last")
    assert store.subjects_held <= 1


async def test_a_usage_file_that_cannot_be_written_leaves_usage_in_memory(tmp_path, caplog):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    usage = UsageFile(blocked / "usage.sqlite3")  # its folder cannot be made: a read-only root, say
    usage.add(delta_for("team", None, "m", 200, 1, 1, 0))
    today = datetime.now(UTC).date()
    assert sum(c.requests for c in (await usage.rows(today, today)).values()) == 1
    assert "kept in memory only" in caplog.text


async def test_redis_trims_a_window_of_many_thousand_reservations(redis_url):
    """Lua's unpack() stops at ~8,000 values: a window that empties at once is trimmed in runs."""
    import redis.asyncio as aioredis

    subject = key(tokens_per_minute=10**9)
    raw = aioredis.Redis.from_url(redis_url)
    entries = {f"old:{n}": 1 for n in range(12_000)}  # reserved long ago: all out of the window
    await raw.zadd("vlserve:lim:team:tok", entries)
    await raw.hset("vlserve:lim:team:amt", mapping={**entries, "_sum": 12_000})
    store = RedisStore(redis_url, timeout_s=5)
    verdict = await take(store, subject, Charge(tokens=5), entry="new")
    assert verdict.admitted and verdict.windows.tokens_remaining == 10**9 - 5
    assert await raw.zcard("vlserve:lim:team:tok") == 1
    await store.close()
    await raw.aclose()


async def test_an_image_a_request_sends_again_is_counted_once():
    """An extraction's repair turn, or a PDF page tried once more, sends the same image again."""
    from vlserve.tenancy.keys import ApiKey
    from vlserve.tenancy.quota import Caller, Quota

    quota = Quota(None)
    ticket = quota.ticket(Caller(ApiKey("photos", "x", Limits(images_per_day=3))))
    await ticket.reserve(10, 2, ("a", "b"))
    await ticket.reserve(10, 2, ("a", "b"))  # the repair turn: the same two images
    await ticket.reserve(10, 1, ("c",))
    assert ticket.images == 3


def test_usage_rows_turn_over_at_utc_midnight(monkeypatch):
    # The day is worked out once a day from POSIX time; a request a second after midnight
    # goes to the new day's row, one a second before to the old one's.
    midnight = datetime(2026, 12, 31, tzinfo=UTC).timestamp()
    days = []
    for now in (midnight - 1, midnight - 1, midnight + 1, midnight + 86_400):
        monkeypatch.setattr("time.time", lambda now=now: now)
        days.append(delta_for("team", None, "m", 200, 1, 1, 0).where.day)
    assert days == ["2026-12-30", "2026-12-30", "2026-12-31", "2027-01-01"]


def test_usage_counts_add_every_count():
    total = UsageCounts(*range(1, len(fields(UsageCounts)) + 1))
    total.add(UsageCounts(*(10 ** n for n in range(len(fields(UsageCounts))))))
    assert astuple(total) == tuple(n + 1 + 10 ** n for n in range(len(fields(UsageCounts))))
