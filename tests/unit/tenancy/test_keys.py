"""API_KEYS_FILE: plain lines and the TOML form with names and limits; reloads."""

from __future__ import annotations

import hashlib
import textwrap

import pytest

from vlserve.tenancy.keys import KeyFileError, KeySource, Limits, load_key_ring

FULL = textwrap.dedent("""
    [defaults]
    requests_per_minute = 600

    [keys.team-a]
    key = "sk-team-a-0001"
    requests_per_minute = 60
    tokens_per_minute = 20000
    max_concurrent = 4
    images_per_day = 500
    models = ["qwen3-vl-32b"]
    admin = false

    [keys.openwebui]
    key_sha256 = "%s"
    user_header = "X-OpenWebUI-User-Id"
    [keys.openwebui.per_user]
    requests_per_minute = 20
    tokens_per_minute = 8000
""") % hashlib.sha256(b"sk-webui-0002").hexdigest()


def write(tmp_path, text, name="keys.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_readme_shape_gives_named_keys_with_their_limits(tmp_path):
    ring = load_key_ring([], write(tmp_path, FULL))
    team = ring.find(b"sk-team-a-0001")
    assert team is not None and team.name == "team-a"
    assert team.limits == Limits(requests_per_minute=60, tokens_per_minute=20000, max_concurrent=4,
                                 images_per_day=500)
    assert team.models == {"qwen3-vl-32b"} and not team.admin
    webui = ring.find(b"sk-webui-0002")  # found by its hash: the file holds no secret
    assert webui is not None and webui.name == "openwebui"
    assert webui.limits == Limits(requests_per_minute=600)  # the defaults
    assert webui.user_header == "x-openwebui-user-id"
    assert webui.per_user == Limits(requests_per_minute=20, tokens_per_minute=8000)
    assert ring.find(b"sk-team-a-000") is None and ring.find(b"") is None


def test_plain_keys_are_unnamed_keys_with_the_defaults(tmp_path):
    ring = load_key_ring(["sk-from-env-1"], write(tmp_path, "# comment\n\nsk-line-2\n", "keys.txt"))
    assert {key.name for key in ring.by_hash.values()} == {
        "key-" + hashlib.sha256(s).hexdigest()[:8] for s in (b"sk-from-env-1", b"sk-line-2")}
    assert ring.find(b"sk-line-2").limits == Limits()


@pytest.mark.parametrize("text, named", [
    ("[keys.a]\nkey = 'sk-aaaaaaaa'\nrequests_per_minute = 0\n", "key 'a', field requests_per_minute"),
    ("[keys.a]\nkey = 'sk-aaaaaaaa'\nrequest_per_minute = 5\n", "key 'a', field request_per_minute"),
    ("[keys.a]\nkey = 'sk-aaaaaaaa'\ntokens_per_minute = 'many'\n", "key 'a', field tokens_per_minute"),
    ("[keys.a]\nrequests_per_minute = 5\n", "key 'a': give exactly one of"),
    ("[keys.a]\nkey_sha256 = 'abc'\n", "key 'a', field key_sha256"),
    ("[keys.a]\nkey = 'sk-aaaaaaaa'\n[keys.a.per_user]\nrequests_per_minute = 1\n", "need `user_header`"),
    ("[keys.a]\nkey = 'sk-aaaaaaaa'\n[keys.b]\nkey = 'sk-aaaaaaaa'\n", "same secret"),
    ("[defaults]\nmax_concurrent = -1\n", "[defaults], field max_concurrent"),
    ("[key.a]\nkey = 'sk-aaaaaaaa'\n", "unknown table 'key'"),
    ("[keys.a\n", "not valid TOML"),
    ("[defaults]\nrequests_per_minute = 5\n", "no keys in the file"),
    ("", "no keys in the file"),
])
def test_a_bad_file_is_one_line_that_names_the_key_and_field(tmp_path, text, named):
    with pytest.raises(KeyFileError) as caught:
        load_key_ring([], write(tmp_path, text))
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_a_reload_applies_a_good_file_and_keeps_the_old_keys_on_a_bad_one(tmp_path, caplog):
    path = write(tmp_path, "[keys.a]\nkey = 'sk-aaaaaaaa'\n")
    source = KeySource([], path)
    assert not source.reload_if_changed()  # nothing changed
    path.write_text("[keys.b]\nkey = 'sk-bbbbbbbb'\nrequests_per_minute = 3\n")
    assert source.reload_if_changed()
    assert source.ring.find(b"sk-aaaaaaaa") is None
    assert source.ring.find(b"sk-bbbbbbbb").limits.requests_per_minute == 3
    path.write_text("[keys.b]\nkey = 'sk-bbbbbbbb'\nrequests_per_minute = 'x'\n# longer, so the file is new\n")
    assert not source.reload_if_changed()
    assert source.ring.find(b"sk-bbbbbbbb") is not None  # the old ring stays in force
    assert "was not reloaded" in caplog.text and "requests_per_minute" in caplog.text
