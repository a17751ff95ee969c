# -*- test-case-name: txstore.test.unit.test_ec -*-
"""
One erasure-coded policy's codec: a segment of the object in, ``k + m`` fragments out, and
back from any ``k`` of them.

An object is cut into segments of ``segment_size`` bytes (the last one shorter); each segment is
encoded into one fragment per index, and fragment *i* of every segment, concatenated, is the
fragment archive stored on the policy's *i*-th node. pyeclib puts a small header (the index,
the sizes, a checksum field) in front of each fragment, so a fragment says what it is and a
decode can be given any ``k`` of them in any order.

Every method blocks (pyeclib runs C code that holds the GIL for small inputs and may release it
for large ones): callers run them in a thread pool, on whole segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import define, field

from txstore.common.policies import ECParameters


@define
class ECCodec:
    params: ECParameters
    _driver: Any = field(init=False, repr=False)
    _empty_fragment_size: int | None = field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        from pyeclib.ec_iface import ECDriver  # imported here: only EC policies need it

        self._driver = ECDriver(
            k=self.params.num_data_fragments, m=self.params.num_parity_fragments, ec_type=self.params.ec_type
        )

    @property
    def k(self) -> int:
        return self.params.num_data_fragments

    @property
    def m(self) -> int:
        return self.params.num_parity_fragments

    @property
    def scheme(self) -> str:
        """
        ``<ec_type> <k>+<m>``, stored with every archive (``X-Object-Sysmeta-Ec-Scheme``):
        fragments decode only with the backend and counts that wrote them (another backend
        decodes them into wrong bytes without an error), so a reader compares it first.
        """
        return f"{self.params.ec_type} {self.k}+{self.m}"

    @property
    def segment_size(self) -> int:
        return self.params.segment_size

    @property
    def durable_quorum(self) -> int:
        """
        Fragment archives that must be stored before a PUT may succeed: ``k`` plus the parity
        pyeclib says the backend needs to recover one more loss (1 for Reed-Solomon), Swift's rule.
        """
        return self.k + self._driver.min_parity_fragments_needed()

    def encode(self, segment: bytes | memoryview) -> list[bytes]:
        """(blocking) The ``k + m`` fragments of one segment, by index. An empty object is
        one empty segment, whose fragments are headers only."""
        return list(self._driver.encode(bytes(segment)))

    def decode(self, fragments: Sequence[bytes]) -> bytes:
        """(blocking) The segment, from at least ``k`` of its fragments (any indexes, any order)."""
        if len(fragments) < self.k:
            raise ValueError(f"{len(fragments)} fragments cannot rebuild a segment: {self.k} are needed")
        return self._driver.decode(list(fragments))

    def reconstruct(self, fragments: Sequence[bytes], index: int) -> bytes:
        """(blocking) Fragment ``index`` of a segment, rebuilt from ``k`` others."""
        if not 0 <= index < self.k + self.m:
            raise ValueError(f"no fragment index {index} in a {self.k}+{self.m} policy")
        return self._driver.reconstruct(list(fragments), [index])[0]

    def fragment_index(self, fragment: bytes) -> int:
        """The index a fragment's own header names."""
        return int(self._driver.get_metadata(fragment, formatted=True)["index"])

    def fragment_size(self, segment_length: int) -> int:
        """Bytes of one fragment of a segment of ``segment_length`` bytes, header included."""
        if segment_length == 0:
            if self._empty_fragment_size is None:
                self._empty_fragment_size = len(self.encode(b"")[0])
            return self._empty_fragment_size
        info = self._driver.get_segment_info(segment_length, segment_length)
        return int(info["fragment_size"])
