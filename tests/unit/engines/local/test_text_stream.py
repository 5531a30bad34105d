from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vlserve.engines.local.text_stream import IncrementalDecoder, StopMatcher


def run(stops, pieces):
    matcher, out = StopMatcher(stops), []
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out.append(text)
        if hit:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_stop_split_across_pieces_is_cut_before_it():
    assert run(["STOP"], ["hello S", "TO", "P and more"]) == ("hello ", True)


def test_first_of_several_stops_wins():
    assert run(["b", "xyz"], ["axy", "zb"]) == ("a", True)


def test_without_a_stop_everything_comes_out():
    assert run(["never"], ["a", "nev", "e"]) == ("anev" + "e", False)


@given(st.lists(st.text(max_size=5), max_size=10), st.text(min_size=1, max_size=3))
def test_output_is_the_text_up_to_the_first_stop(pieces, stop):
    text = "".join(pieces)
    out, hit = run([stop], pieces)
    if stop in text:
        assert hit and out == text[: text.index(stop)]
    else:
        assert not hit and out == text


def test_incremental_decoder_matches_full_decode(processor):
    tokenizer = processor.tokenizer
    ids = tokenizer("Hello wörld — ünïcode 你好 ok", add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.add(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in p for p in pieces)
