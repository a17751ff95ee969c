"""
The proxy's request values: what every stage asks of a request (its decoded path, segments and
query parameters) is worked out once, and again whenever what it depends on changes.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.paths import ALLOW_RESERVED, BadPath
from txstore.proxy.messages import HeaderMap, SwiftRequest


class SplitTests(SynchronousTestCase):
    def test_segments_follow_a_rewritten_path(self) -> None:
        request = SwiftRequest("GET", "/v1/a/c/o%20x")
        self.assertEqual(request.split(1, 4), ["v1", "a", "c", "o x"])
        self.assertEqual(request.split(2, 3), ["v1", "a", "c/o x"])
        request.path = "/v1/a/c2"
        self.assertEqual(request.split(1, 4), ["v1", "a", "c2", None])
        self.assertEqual(request.decoded_path, "/v1/a/c2")

    def test_each_caller_gets_its_own_list(self) -> None:
        request = SwiftRequest("GET", "/v1/a/c/o")
        request.split(1, 4)[3] = "changed"
        self.assertEqual(request.split(1, 4), ["v1", "a", "c", "o"])

    def test_a_bad_path_is_refused_every_time(self) -> None:
        request = SwiftRequest("GET", "/v1//o")
        for _ in range(2):
            self.assertEqual(self.assertRaises(BadPath, request.split, 2, 4).status, 400)
        request = SwiftRequest("GET", "/v1/a/%ff")
        for _ in range(2):
            self.assertEqual(self.assertRaises(BadPath, request.split, 2, 4).status, 412)

    def test_segments_follow_the_reserved_names_header(self) -> None:
        request = SwiftRequest("GET", "/v1/a/%00c")
        self.assertRaises(BadPath, request.split, 2, 4)
        request.headers[ALLOW_RESERVED] = "true"
        self.assertEqual(request.split(2, 4), ["v1", "a", "\x00c", None])
        request.headers[ALLOW_RESERVED] = "false"
        self.assertRaises(BadPath, request.split, 2, 4)


class ParamsTests(SynchronousTestCase):
    def test_parameters_follow_the_query(self) -> None:
        request = SwiftRequest("GET", "/v1/a/c", HeaderMap(), query="a=1&b=%20&a=2&flag")
        self.assertEqual(request.params, {"a": "2", "b": " ", "flag": ""})
        request.query = "format=json"
        self.assertEqual(request.params, {"format": "json"})
        request.query = ""
        self.assertEqual(request.params, {})

    def test_each_caller_gets_its_own_dict(self) -> None:
        request = SwiftRequest("GET", "/v1/a/c", query="limit=1")
        request.params["limit"] = "2"
        self.assertEqual(request.params, {"limit": "1"})
