"""shadow.gateway.streaming: when an answer is streamed, and what PrefixStream sends and keeps."""

from __future__ import annotations

from shadow.gateway.streaming import PrefixStream, should_stream


def test_should_stream_by_length() -> None:
    assert should_stream(None, 100) and should_stream(101, 100)
    assert not should_stream(100, 100) and not should_stream(None, -1) and not should_stream(10**9, -1)


def test_a_known_large_body_passes_straight_through_and_keeps_a_prefix() -> None:
    ended: list[bytes] = []
    stream = PrefixStream(hold=0, keep=5, on_end=ended.append)
    assert stream(b"abc") == [b"abc"] and stream(b"defg") == [b"defg"]
    assert stream(b"") == [] and ended == [b"abcde"]
    assert (stream.total, bytes(stream.kept), stream.truncated) == (7, b"abcde", True)


def test_an_unknown_length_body_is_held_until_it_passes_the_limit() -> None:
    small = PrefixStream(hold=10, keep=100)
    assert small(b"12345") == [] and small(b"678") == []
    assert small(b"") == [b"12345678"]  # the end: sent whole, never an empty chunk
    assert not small.truncated and bytes(small.kept) == b"12345678"
    big = PrefixStream(hold=4, keep=2)
    assert big(b"123") == [] and big(b"45") == [b"12345"] and big(b"6") == [b"6"] and big(b"") == []
    assert big.total == 6 and big.truncated
