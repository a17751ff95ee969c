"""Tests for txstore.common.conditionals."""

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.conditionals import evaluate

T = 1700000001  # Tue, 14 Nov 2023 22:13:21 GMT
SAME = "Tue, 14 Nov 2023 22:13:21 GMT"
EARLIER = "Tue, 14 Nov 2023 22:13:20 GMT"


class EvaluateTests(SynchronousTestCase):
    def check(self, expected: int, method: str = "GET", etag: str | None = "abc", **headers: str) -> None:
        self.assertEqual(evaluate(method, etag=etag, last_modified=T, **headers), expected, headers)

    def test_if_match(self) -> None:
        self.check(200, if_match='"abc"')
        self.check(200, if_match="xyz, abc")
        self.check(200, if_match="*")
        self.check(412, if_match="xyz")
        self.check(412, etag=None, if_match="*")

    def test_if_none_match(self) -> None:
        self.check(304, if_none_match="abc")
        self.check(304, method="HEAD", if_none_match="*")
        self.check(412, method="PUT", if_none_match="*")
        self.check(200, if_none_match="xyz")
        self.check(200, etag=None, method="PUT", if_none_match="*")

    def test_dates(self) -> None:
        self.check(304, if_modified_since=SAME)
        self.check(200, if_modified_since=EARLIER)
        self.check(200, if_modified_since="garbage")
        self.check(412, if_unmodified_since=EARLIER)
        self.check(200, if_unmodified_since=SAME)

    def test_every_condition_counts(self) -> None:
        # as Swift: a matching ETag does not excuse a modification (RFC 9110 would answer 200)
        self.check(412, if_match="abc", if_unmodified_since=EARLIER)
        self.check(200, if_match="abc", if_unmodified_since=SAME)
        self.check(304, if_none_match="xyz", if_modified_since=SAME)
        self.check(200, if_none_match="xyz", if_modified_since=EARLIER)
        # the first that fails answers
        self.check(412, if_match="xyz", if_none_match="abc")
        self.check(412, if_none_match="abc", if_unmodified_since=EARLIER)
