"""Tests for txstore.common.timestamps."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.timestamps import Timestamp, parse_http_date


class TimestampTests(SynchronousTestCase):
    def test_normal_form(self) -> None:
        self.assertEqual(Timestamp.parse("1700000000.12345").normal, "1700000000.12345")
        self.assertEqual(Timestamp.parse(1).normal, "0000000001.00000")
        self.assertEqual(Timestamp.parse("1.5").normal, "0000000001.50000")
        self.assertEqual(Timestamp.parse(1700000000.123456).normal, "1700000000.12346")

    def test_internal_form_with_offset(self) -> None:
        ts = Timestamp.parse("1700000000.12345_00000000000000ff")
        self.assertEqual(ts.offset, 255)
        self.assertEqual(ts.normal, "1700000000.12345")
        self.assertEqual(ts.internal, "1700000000.12345_00000000000000ff")
        self.assertEqual(Timestamp.parse("1700000000.12345").internal, "1700000000.12345")

    def test_ordering(self) -> None:
        base = Timestamp.parse("1700000000.12345")
        later_offset = base.next_offset()
        later_time = Timestamp.parse("1700000000.12346")
        self.assertLess(base, later_offset)
        self.assertLess(later_offset, later_time)
        self.assertEqual(sorted([later_time, later_offset, base]), [base, later_offset, later_time])
        self.assertEqual(base, Timestamp.parse(base.internal))
        self.assertEqual(hash(base), hash(Timestamp.parse("1700000000.12345")))

    def test_internal_strings_sort_like_timestamps(self) -> None:
        """File names sort by their timestamps: the internal form is fixed width."""
        stamps = [Timestamp.parse(x) for x in ("2.0", "10.0", "10.0_0000000000000001", "999.5")]
        self.assertEqual(sorted(stamps, key=lambda t: t.internal), sorted(stamps))

    def test_rejects_garbage(self) -> None:
        for bad in ("", "abc", "-1", "1e5", "1.2.3", "12345678901.0", "1.0_", "1.0_xyz", float("nan"), -3, True, None):
            self.assertRaises(ValueError, Timestamp.parse, bad)

    def test_last_modified_rounds_up(self) -> None:
        self.assertEqual(Timestamp.parse("1700000000.00001").last_modified, "Tue, 14 Nov 2023 22:13:21 GMT")
        self.assertEqual(Timestamp.parse("1700000000.00000").last_modified, "Tue, 14 Nov 2023 22:13:20 GMT")

    def test_isoformat(self) -> None:
        self.assertEqual(Timestamp.parse("1700000000.12345").isoformat, "2023-11-14T22:13:20.123450")

    def test_now(self) -> None:
        self.assertEqual(Timestamp.now(clock=lambda: 12.5).normal, "0000000012.50000")

    @given(st.integers(0, 10**15 - 1), st.integers(0, 2**64 - 1))
    def test_round_trip(self, ticks: int, offset: int) -> None:
        ts = Timestamp(ticks, offset)
        self.assertEqual(Timestamp.parse(ts.internal), ts)
        self.assertEqual(Timestamp.parse(ts.normal), Timestamp(ticks))


class HTTPDateTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse_http_date("Tue, 14 Nov 2023 22:13:21 GMT"), 1700000001.0)
        self.assertEqual(parse_http_date("Tuesday, 14-Nov-23 22:13:21 GMT"), 1700000001.0)
        self.assertIsNone(parse_http_date("yesterday"))
