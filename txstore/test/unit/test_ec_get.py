"""Tests for the EC GET body: fragments cut from a node's pieces, and segments read ahead."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.web import ResponseAborted
from txstore.ec.layout import ArchiveLayout
from txstore.proxy.controllers.ec_get import ECBody, _Fragments


class _Pieces:
    """A node's body that hands out ``pieces`` as they are, then the end."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.stopped = False

    def read(self) -> Deferred:
        return succeed(self.pieces.pop(0) if self.pieces else b"")

    def stop(self) -> None:
        self.stopped = True


class _Archive:
    class node:
        device_name = "sdb1"


def taken(fragments: _Fragments, size: int) -> Deferred:
    return Deferred.fromCoroutine(fragments.take(size))


class FragmentsTests(SynchronousTestCase):
    def test_pieces_are_cut_at_fragment_boundaries(self) -> None:
        body = _Pieces([b"abc", b"defg", b"hi", b"jklmnop"])
        fragments = _Fragments(_Archive, body)
        pieces = [self.successResultOf(taken(fragments, 4)) for _ in range(4)]
        self.assertEqual(pieces, [b"abcd", b"efgh", b"ijkl", b"mnop"])

    def test_a_piece_that_is_a_whole_fragment_is_given_as_it_came(self) -> None:
        piece = b"x" * 8
        fragments = _Fragments(_Archive, _Pieces([piece]))
        self.assertIs(self.successResultOf(taken(fragments, 8)), piece)

    def test_an_archive_that_ends_early_is_said(self) -> None:
        fragments = _Fragments(_Archive, _Pieces([b"abc"]))
        self.assertEqual(self.successResultOf(taken(fragments, 2)), b"ab")
        self.failureResultOf(taken(fragments, 2), ResponseAborted)


class _Reader:
    """Segments of ``segment_size`` bytes, each given when the test fires its Deferred."""

    def __init__(self, length: int, segment_size: int) -> None:
        self.layout = ArchiveLayout(length, segment_size, 10, 10)
        self.asked: list[int] = []
        self.pending: dict[int, Deferred] = {}
        self.stopped = False

    async def segment(self, number: int) -> bytes:
        self.asked.append(number)
        d = self.pending[number] = Deferred()
        return await d

    def give(self, number: int) -> None:
        self.pending.pop(number).callback(bytes([number]) * self.layout.segment_length(number))

    def stop(self) -> None:
        self.stopped = True


class ReadAheadTests(SynchronousTestCase):
    def test_the_next_segment_is_asked_for_once_one_is_handed_out(self) -> None:
        reader = _Reader(10, 4)  # segments of 4, 4 and 2 bytes
        body = ECBody(reader, [(b"", 0, 9)], b"")
        first = body.read()
        self.assertEqual(reader.asked, [0])
        reader.give(0)
        self.assertEqual(self.successResultOf(first), b"\0" * 4)
        self.assertEqual(reader.asked, [0, 1])  # before the client asked for more
        reader.give(1)
        self.assertEqual(self.successResultOf(body.read()), b"\1" * 4)
        self.assertEqual(reader.asked, [0, 1, 2])
        third = body.read()
        reader.give(2)
        self.assertEqual(self.successResultOf(third), b"\2" * 2)
        self.assertEqual(reader.asked, [0, 1, 2])  # nothing past the end
        self.assertEqual(self.successResultOf(body.read()), b"")
        self.assertTrue(reader.stopped)

    def test_a_range_reads_ahead_only_within_itself(self) -> None:
        reader = _Reader(12, 4)
        body = ECBody(reader, [(b"", 5, 6)], b"")
        first = body.read()
        reader.give(1)
        self.assertEqual(self.successResultOf(first), b"\1\1")
        self.assertEqual(reader.asked, [1])
        self.assertEqual(self.successResultOf(body.read()), b"")

    def first_of_two_segments_read(self) -> tuple[_Reader, ECBody]:
        """A body of two segments whose first was read: the second is being read ahead."""
        reader = _Reader(8, 4)
        body = ECBody(reader, [(b"", 0, 7)], b"")
        first = body.read()
        reader.give(0)
        self.successResultOf(first)
        return reader, body

    def test_a_read_ahead_that_fails_after_a_stop_is_no_unhandled_error(self) -> None:
        reader, body = self.first_of_two_segments_read()
        ahead = body._ahead
        body.stop()
        self.assertTrue(reader.stopped)
        reader.pending.pop(1).errback(ResponseAborted("its sources were stopped"))
        self.assertIsNone(ahead.result)  # handled: nothing logged as an unhandled error
        self.assertEqual(self.successResultOf(body.read()), b"")

    def test_a_read_ahead_that_failed_fails_the_read_that_needs_it(self) -> None:
        reader, body = self.first_of_two_segments_read()
        reader.pending.pop(1).errback(ResponseAborted("no archive left"))
        self.failureResultOf(body.read(), ResponseAborted)
        self.assertTrue(reader.stopped)
