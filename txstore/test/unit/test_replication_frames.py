"""The replication protocol's pure parts: framing, records, the state machine, the missing check."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.timestamps import Timestamp
from txstore.replication.frames import (
    HEADER,
    MAX_PAYLOAD,
    FrameDecoder,
    FrameType,
    ProtocolError,
    data_record,
    encode,
    record,
)
from txstore.replication.missing import decide, parse_offer
from txstore.replication.states import R, S, SessionMachine, State
from txstore.storage.diskfile import DATA, META, TOMBSTONE, OnDiskFile
from txstore.storage.partitions import ObjectFiles

HASH = "0" * 29 + "abc"


def hello():
    return record(FrameType.HELLO, version=1, kind="object", device="d1", partition=3, policy=0, frag_index=None)


SAMPLE = [
    hello(),
    record(FrameType.READY, version=1),
    record(FrameType.OFFER, objects=[[HASH, {"data": "0000000001.00000"}]]),
    record(FrameType.PUT, hash=HASH, name="/a/c/ö", timestamp="0000000001.00000", metadata={"X": "y"}, length=3),
    data_record(b"abc"),
    record(FrameType.PUT_END, etag="900150983cd24fb0d6963f7d28e17f72"),
    record(FrameType.ERROR, code=507, reason="no device"),
]


class FramingTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        stream = b"".join(encode(item) for item in SAMPLE)
        self.assertEqual(FrameDecoder().feed(stream), SAMPLE)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=400), max_size=12))
    def test_any_split(self, cuts) -> None:
        stream = b"".join(encode(item) for item in SAMPLE)
        positions = sorted({min(c, len(stream)) for c in cuts}) + [len(stream)]
        decoder, got, start = FrameDecoder(), [], 0
        for end in positions:
            got += decoder.feed(stream[start:end])
            start = end
        self.assertEqual(got, SAMPLE)
        self.assertEqual(decoder.pending_bytes, 0)

    def test_partial_frame_waits(self) -> None:
        decoder = FrameDecoder()
        raw = encode(SAMPLE[0])
        self.assertEqual(decoder.feed(raw[:-1]), [])
        self.assertEqual(decoder.feed(raw[-1:]), [SAMPLE[0]])

    def test_oversized_length_refused_before_buffering(self) -> None:
        with self.assertRaises(ProtocolError):
            FrameDecoder().feed(HEADER.pack(FrameType.DATA, MAX_PAYLOAD + 1))

    def test_unknown_type(self) -> None:
        with self.assertRaisesRegex(ProtocolError, "unknown frame type 0x7f"):
            FrameDecoder().feed(HEADER.pack(0x7F, 2) + b"{}")

    def test_not_json(self) -> None:
        for payload in (b"{nope", b"[1]", b"\xff\xfe"):
            with self.assertRaises(ProtocolError):
                FrameDecoder().feed(HEADER.pack(FrameType.END, len(payload)) + payload)

    def test_missing_or_mistyped_fields(self) -> None:
        for payload in (b'{"code": 5}', b'{"code": "5", "reason": "x"}', b'{"code": true, "reason": "x"}'):
            with self.assertRaises(ProtocolError):
                FrameDecoder().feed(HEADER.pack(FrameType.ERROR, len(payload)) + payload)

    def test_empty_data_frame(self) -> None:
        with self.assertRaises(ProtocolError):
            FrameDecoder().feed(HEADER.pack(FrameType.DATA, 0))
        with self.assertRaises(ValueError):
            data_record(b"")

    def test_building_a_bad_record_fails_early(self) -> None:
        with self.assertRaises(ProtocolError):
            record(FrameType.PUT, hash=HASH)


def run(machine: SessionMachine, *steps) -> State:
    for side, item in steps:
        machine.step(side, item)
    return machine.state


class StateMachineTests(SynchronousTestCase):
    def offer(self):
        return record(FrameType.OFFER, objects=[])

    def test_full_object_session(self) -> None:
        machine = SessionMachine()
        final = run(
            machine,
            (S, hello()), (R, record(FrameType.READY, version=1)),
            (S, record(FrameType.GET_HASHES)), (R, record(FrameType.HASHES, hashes={})),
            (S, self.offer()), (S, self.offer()), (R, record(FrameType.WANT, objects=[], newer=[])),
            (S, record(FrameType.OFFER_END)), (R, record(FrameType.WANT, objects=[], newer=[])),
            (R, record(FrameType.WANT_END)),
            (S, SAMPLE[3]), (S, SAMPLE[4]), (S, SAMPLE[5]),
            (S, record(FrameType.DELETE, hash=HASH, name="/a/c/o", timestamp="1", metadata={})),
            (S, record(FrameType.UPDATES_END)), (R, record(FrameType.END)), (S, record(FrameType.END)),
        )
        self.assertEqual(final, State.CLOSED)
        with self.assertRaises(ProtocolError):
            machine.step(S, record(FrameType.END))

    def test_nothing_to_do(self) -> None:
        machine = SessionMachine()
        self.assertEqual(run(machine, (S, hello()), (R, record(FrameType.READY, version=1)),
                             (S, record(FrameType.GET_HASHES)), (R, record(FrameType.HASHES, hashes={})),
                             (S, record(FrameType.END))), State.CLOSED)

    def test_out_of_turn(self) -> None:
        cases = [
            [(R, record(FrameType.READY, version=1))],  # before HELLO
            [(S, hello()), (S, record(FrameType.GET_HASHES))],  # before READY
            [(S, hello()), (R, record(FrameType.READY, version=1)), (S, SAMPLE[3])],  # PUT before the check
            [(S, hello()), (R, record(FrameType.READY, version=1)), (S, SAMPLE[4])],  # DATA outside a PUT
            [(S, hello()), (R, record(FrameType.READY, version=1)), (R, record(FrameType.HASHES, hashes={}))],
        ]
        for steps in cases:
            with self.assertRaises(ProtocolError):
                run(SessionMachine(), *steps)

    def test_want_needs_an_offer(self) -> None:
        opened = [(S, hello()), (R, record(FrameType.READY, version=1))]
        with self.assertRaisesRegex(ProtocolError, "without an OFFER"):
            run(SessionMachine(), *opened, (S, self.offer()), (R, record(FrameType.WANT, objects=[], newer=[])),
                (R, record(FrameType.WANT, objects=[], newer=[])))
        with self.assertRaisesRegex(ProtocolError, "before every OFFER"):
            run(SessionMachine(), *opened, (S, self.offer()), (S, record(FrameType.OFFER_END)),
                (R, record(FrameType.WANT_END)))

    def test_error_ends_from_any_state(self) -> None:
        machine = SessionMachine()
        run(machine, (S, hello()), (R, record(FrameType.READY, version=1)), (S, self.offer()))
        self.assertEqual(machine.step(R, SAMPLE[6]), State.CLOSED)
        self.assertTrue(machine.closed)

    def test_database_session(self) -> None:
        self.assertEqual(run(
            SessionMachine(), (S, hello()), (R, record(FrameType.READY, version=1)),
            (S, record(FrameType.DB_SYNC, hash=HASH, info={})), (R, record(FrameType.DB_STATE, state="behind")),
            (S, record(FrameType.DB_ROWS, rows=[])), (S, record(FrameType.DB_FILE, hash=HASH, length=1)),
            (S, data_record(b"x")), (S, record(FrameType.DB_FILE_END, md5="")),
            (S, record(FrameType.UPDATES_END)), (R, record(FrameType.END)), (S, record(FrameType.END)),
        ), State.CLOSED)


def ts(value: float) -> Timestamp:
    return Timestamp.from_seconds(value)


def local(data=None, meta=None, tomb=None) -> ObjectFiles:
    return ObjectFiles(
        HASH, Path("/nowhere"),
        OnDiskFile(ts(data), DATA) if data else None,
        OnDiskFile(ts(meta), META) if meta else None,
        OnDiskFile(ts(tomb), TOMBSTONE) if tomb else None,
    )


class MissingCheckTests(SynchronousTestCase):
    def test_offer_parsing(self) -> None:
        self.assertEqual(parse_offer({"data": "0000000001.00000"}), {"data": ts(1)})
        for bad in ({}, {"data": "x"}, {"data": "1", "ts": "2"}, {"meta": "1"}, {"other": "1"}, [], "x"):
            with self.assertRaises(ProtocolError):
                parse_offer(bad)

    def test_decisions(self) -> None:
        o = lambda **k: {key: ts(v) for key, v in k.items()}  # noqa: E731
        cases = [
            (o(data=5), None, ["data"], False),
            (o(data=5), local(data=5), [], False),
            (o(data=5), local(data=4), ["data"], False),
            (o(data=5), local(data=6), [], True),
            (o(data=5), local(tomb=6), [], True),
            (o(data=5), local(tomb=5), [], False),  # a tombstone wins a tie
            (o(ts=5), local(data=4), ["ts"], False),
            (o(ts=5), local(data=5), [], False),
            (o(ts=5), None, ["ts"], False),
            (o(data=5, meta=7), local(data=5), ["meta"], False),
            (o(data=5, meta=7), local(data=5, meta=7), [], False),
            (o(data=5, meta=7), local(data=5, meta=8), [], True),
            (o(data=5, meta=7), None, ["data", "meta"], False),
            (o(data=5, meta=7), local(data=6), ["meta"], False),  # a newer POST applies to newer data
            (o(data=5, meta=7), local(data=8), [], True),
            (o(data=5, meta=7), local(tomb=6), [], False),
        ]
        for offered, held, wants, newer in cases:
            self.assertEqual(decide(offered, held), (wants, newer), (offered, held))
