# -*- test-case-name: txstore.test.unit.test_ec -*-
"""
The arithmetic of an erasure-coded object: its segments, and where each segment's fragment
lies in a fragment archive. Pure: no pyeclib, no I/O.

An object of ``L`` bytes is ``ceil(L / S)`` segments of ``S`` bytes (the last one shorter; an
empty object is one empty segment). Every fragment of a whole segment has the same size ``F``,
so segment *n*'s fragment starts at ``n * F`` in every archive, and a client's byte range maps
to a run of whole segments and to one byte range of each archive: a ranged GET reads only the
fragments of the segments it needs.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class ArchiveLayout:
    """Where an object's bytes are, segment by segment, in each of its fragment archives."""

    object_length: int
    segment_size: int
    fragment_size: int  # of a whole segment's fragment, header included
    last_fragment_size: int  # of the last segment's (equal to fragment_size when it is whole)

    @classmethod
    def of(cls, codec, object_length: int, segment_size: int | None = None) -> ArchiveLayout:
        """
        The layout of an object of ``object_length`` bytes under ``codec`` (an `ECCodec`), cut
        in ``segment_size`` segments (the codec's unless the object was stored with another).
        """
        size = segment_size or codec.segment_size
        whole = codec.fragment_size(size)
        last_length = object_length - (segment_count(object_length, size) - 1) * size
        return cls(object_length, size, whole, whole if last_length == size else codec.fragment_size(last_length))

    @property
    def segments(self) -> int:
        return segment_count(self.object_length, self.segment_size)

    @property
    def archive_length(self) -> int:
        """Bytes of each fragment archive (every index stores the same length)."""
        return (self.segments - 1) * self.fragment_size + self.last_fragment_size

    def segment_length(self, segment: int) -> int:
        self._check(segment)
        return min(self.segment_size, self.object_length - segment * self.segment_size)

    def segments_for(self, first_byte: int, last_byte: int) -> tuple[int, int]:
        """The first and last segment holding the object's bytes ``first_byte..last_byte``."""
        if not 0 <= first_byte <= last_byte < self.object_length:
            raise ValueError(f"bytes {first_byte}-{last_byte} are not within {self.object_length}")
        return first_byte // self.segment_size, last_byte // self.segment_size

    def archive_range(self, first_segment: int, last_segment: int) -> tuple[int, int]:
        """The bytes (inclusive) of every fragment archive that hold those segments' fragments."""
        self._check(first_segment)
        self._check(last_segment)
        end = last_segment * self.fragment_size + (
            self.last_fragment_size if last_segment == self.segments - 1 else self.fragment_size
        )
        return first_segment * self.fragment_size, end - 1

    def object_offset(self, segment: int) -> int:
        """Where segment ``segment`` starts in the object."""
        self._check(segment)
        return segment * self.segment_size

    def _check(self, segment: int) -> None:
        if not 0 <= segment < self.segments:
            raise ValueError(f"no segment {segment} in an object of {self.segments}")


def segment_count(object_length: int, segment_size: int) -> int:
    """Segments of an object: at least one (an empty object is one empty segment)."""
    if object_length < 0 or segment_size < 1:
        raise ValueError("a length is not negative and a segment is at least one byte")
    return max(1, -(-object_length // segment_size))


class SegmentCutter:
    """
    Cuts a body arriving in chunks of any size into segments of exactly ``segment_size`` bytes
    (the last one shorter), holding at most one segment's worth at a time.
    """

    def __init__(self, segment_size: int) -> None:
        if segment_size < 1:
            raise ValueError("a segment is at least one byte")
        self.segment_size = segment_size
        self._buffer = bytearray()
        self._emitted = 0
        self._finished = False

    def feed(self, chunk: bytes | memoryview) -> list[bytes]:
        """The segments ``chunk`` completes, in order (often none, or one)."""
        if self._finished:
            raise RuntimeError("the body has ended")
        view = memoryview(chunk)
        segments = []
        while view:
            take = min(len(view), self.segment_size - len(self._buffer))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == self.segment_size:
                segments.append(bytes(self._buffer))
                self._buffer.clear()
        self._emitted += len(segments)
        return segments

    def finish(self) -> bytes | None:
        """
        The last, shorter segment; ``b""`` when the body was empty (one empty segment), None
        when it ended exactly at a segment's end.
        """
        if self._finished:
            raise RuntimeError("the body has ended")
        self._finished = True
        if self._buffer or self._emitted == 0:
            last = bytes(self._buffer)
            self._buffer.clear()
            return last
        return None
