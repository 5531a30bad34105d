from __future__ import annotations

from vlserve.server import auth


def test_every_key_is_compared_in_constant_time(monkeypatch):
    calls = []

    def spy(a, b):
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    keys = [b"k1", b"k2", b"k3"]
    assert auth.key_matches(b"k1", keys)
    assert calls == [(b"k1", b"k1"), (b"k1", b"k2"), (b"k1", b"k3")]  # no early exit on a match
    calls.clear()
    assert not auth.key_matches(b"nope", keys)
    assert len(calls) == 3
