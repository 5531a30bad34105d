"""Log-probability shapes from the tiny model's real tokenizer."""

from __future__ import annotations

from vlserve.engines.local.token_scores import LogprobFormatter, ScoredToken


def test_bytes_are_the_tokens_own_even_inside_a_character(processor):
    tokenizer = processor.tokenizer
    formatter = LogprobFormatter(tokenizer)
    text = "猫🐱 café"
    ids = tokenizer(text)["input_ids"]
    assert any(formatter.text(i) == "\ufffd" for i in ids)  # some tokens hold part of a character
    assert b"".join(bytes(formatter.token_bytes(i)) for i in ids) == text.encode("utf-8")


def test_special_tokens_are_their_text(processor):
    formatter = LogprobFormatter(processor.tokenizer)
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert formatter.token_bytes(end) == list(b"<|im_end|>")


def test_legacy_offsets_follow_the_tokens(processor):
    tokenizer = processor.tokenizer
    formatter = LogprobFormatter(tokenizer)
    ids = tokenizer("Hello there, friend")["input_ids"]
    scored = [ScoredToken(i, -1.0, ()) for i in ids]
    whole, end = formatter.legacy(scored, 5)
    first, middle = formatter.legacy(scored[:2], 5)
    rest, end_again = formatter.legacy(scored[2:], middle)
    assert whole["text_offset"] == first["text_offset"] + rest["text_offset"] and end == end_again
    assert end - 5 == len("".join(whole["tokens"]))
