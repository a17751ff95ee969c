"""Tests for txstore.ec: the codec over pyeclib, and the segment and fragment arithmetic."""

from __future__ import annotations

import itertools
import os
import random

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.policies import ECParameters
from txstore.ec.codec import ECCodec
from txstore.ec.layout import ArchiveLayout, SegmentCutter, segment_count

PARAMS = ECParameters("liberasurecode_rs_vand", 4, 2, segment_size=4096)


def archives(codec: ECCodec, body: bytes) -> list[bytes]:
    """Every fragment archive of ``body``, as a PUT would store them."""
    cutter = SegmentCutter(codec.segment_size)
    segments = cutter.feed(body)
    last = cutter.finish()
    if last is not None:
        segments.append(last)
    per_index: list[list[bytes]] = [[] for _ in range(codec.k + codec.m)]
    for segment in segments:
        for index, fragment in enumerate(codec.encode(segment)):
            per_index[index].append(fragment)
    return [b"".join(pieces) for pieces in per_index]


class CodecTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.codec = ECCodec(PARAMS)

    def test_any_k_fragments_decode_the_segment(self) -> None:
        segment = os.urandom(4096)
        fragments = self.codec.encode(segment)
        self.assertEqual(len(fragments), 6)
        self.assertEqual([self.codec.fragment_index(f) for f in fragments], list(range(6)))
        for chosen in itertools.combinations(fragments, 4):
            self.assertEqual(self.codec.decode(list(reversed(chosen))), segment)
        self.assertRaises(ValueError, self.codec.decode, fragments[:3])

    def test_a_missing_fragment_is_rebuilt_byte_for_byte(self) -> None:
        fragments = self.codec.encode(os.urandom(3000))
        for missing in range(6):
            others = [f for i, f in enumerate(fragments) if i != missing][:4]
            self.assertEqual(self.codec.reconstruct(others, missing), fragments[missing])
        self.assertRaises(ValueError, self.codec.reconstruct, fragments[:4], 6)

    def test_sizes_and_quorum(self) -> None:
        self.assertEqual(self.codec.durable_quorum, 5)  # k + 1 for Reed-Solomon, as Swift
        for length in (0, 1, 1000, 4095, 4096):
            self.assertEqual(self.codec.fragment_size(length), len(self.codec.encode(os.urandom(length))[0]), length)

    def test_the_scheme_names_the_backend_and_counts(self) -> None:
        self.assertEqual(self.codec.scheme, "liberasurecode_rs_vand 4+2")

    def test_an_empty_object_is_one_segment_of_header_only_fragments(self) -> None:
        fragments = self.codec.encode(b"")
        self.assertEqual(self.codec.decode(fragments[2:]), b"")


class LayoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.codec = ECCodec(PARAMS)

    def test_archive_length_is_what_the_fragments_add_up_to(self) -> None:
        for length in (0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 17):
            layout = ArchiveLayout.of(self.codec, length)
            stored = archives(self.codec, os.urandom(length))
            self.assertEqual({len(a) for a in stored}, {layout.archive_length}, length)
            self.assertEqual(layout.segments, segment_count(length, 4096))

    def test_a_range_reads_only_the_fragments_of_its_segments(self) -> None:
        body = os.urandom(5 * 4096 + 1000)
        layout = ArchiveLayout.of(self.codec, len(body))
        stored = archives(self.codec, body)
        rng = random.Random(7)
        cases = [(0, 0), (0, len(body) - 1), (4095, 4096), (5 * 4096, len(body) - 1), (100, 3 * 4096 + 5)]
        cases += [tuple(sorted(rng.randrange(len(body)) for _ in range(2))) for _ in range(20)]
        for first, last in cases:
            first_segment, last_segment = layout.segments_for(first, last)
            start, end = layout.archive_range(first_segment, last_segment)
            # Any k archives' slices decode, segment by segment, to the bytes asked for.
            pieces = [a[start : end + 1] for a in stored[2:]]
            decoded = b""
            offset = 0
            for segment in range(first_segment, last_segment + 1):
                size = layout.fragment_size if segment < layout.segments - 1 else layout.last_fragment_size
                decoded += self.codec.decode([p[offset : offset + size] for p in pieces])
                offset += size
            self.assertEqual(offset, end - start + 1)
            skip = first - layout.object_offset(first_segment)
            self.assertEqual(decoded[skip : skip + last - first + 1], body[first : last + 1], (first, last))

    def test_bad_ranges_and_segments(self) -> None:
        layout = ArchiveLayout.of(self.codec, 10_000)
        self.assertRaises(ValueError, layout.segments_for, 5, 10_000)
        self.assertRaises(ValueError, layout.segments_for, 6, 5)
        self.assertRaises(ValueError, layout.archive_range, 0, 3)
        self.assertEqual([layout.segment_length(n) for n in range(3)], [4096, 4096, 10_000 - 8192])
        self.assertRaises(ValueError, segment_count, -1, 4096)


class CutterTests(SynchronousTestCase):
    def test_segments_of_exactly_the_size_whatever_the_chunks(self) -> None:
        body = os.urandom(10 * 1000 + 7)
        rng = random.Random(3)
        for _ in range(20):
            cutter = SegmentCutter(1000)
            out = []
            position = 0
            while position < len(body):
                step = rng.choice([1, 7, 999, 1000, 1001, 3500])
                out += cutter.feed(body[position : position + step])
                position += step
                self.assertLess(len(cutter._buffer), 1000)  # never more than one segment held
            out.append(cutter.finish())
            self.assertEqual([len(s) for s in out], [1000] * 10 + [7])
            self.assertEqual(b"".join(out), body)

    def test_ends(self) -> None:
        cutter = SegmentCutter(4)
        self.assertEqual(cutter.finish(), b"")  # an empty body: one empty segment
        cutter = SegmentCutter(4)
        self.assertEqual(cutter.feed(b"abcdefgh"), [b"abcd", b"efgh"])
        self.assertIsNone(cutter.finish())  # ended on a segment's end
        self.assertRaises(RuntimeError, cutter.feed, b"x")
        self.assertRaises(ValueError, SegmentCutter, 0)
