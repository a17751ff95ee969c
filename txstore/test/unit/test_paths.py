"""Tests for txstore.common.paths: names round-trip, bad paths get the right 4xx."""

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.paths import BackendPath, BadPath, decode_path, parse_backend_path, split_api_path, split_path


class SplitPathTests(SynchronousTestCase):
    def test_object_names_keep_their_slashes(self) -> None:
        self.assertEqual(split_path("/a/c/x//y/", 1, 3), ["a", "c", "x//y/"])
        self.assertEqual(split_path("/a/c/dir/", 1, 3), ["a", "c", "dir/"])
        self.assertEqual(split_path("/a/c//", 1, 3), ["a", "c", "/"])

    def test_optional_segments(self) -> None:
        self.assertEqual(split_path("/a", 1, 3), ["a", None, None])
        self.assertEqual(split_path("/a/", 1, 3), ["a", None, None])
        self.assertEqual(split_path("/a/c/", 1, 3), ["a", "c", None])

    def test_bad(self) -> None:
        for bad in ("", "a/c", "/", "//c", "/a//o"):
            err = self.assertRaises(BadPath, split_path, bad, 1, 3)
            self.assertEqual(err.status, 400)


class SplitAPIPathTests(SynchronousTestCase):
    """The proxy's paths, with Swift's statuses: clients tell a missing account from a bad path."""

    def test_routes(self) -> None:
        cases = {
            "/v1/a": ("v1", "a", None, None),
            "/v1/a/": ("v1", "a", None, None),
            "/v1/a/c/": ("v1", "a", "c", None),
            "/v1/a/c//": ("v1", "a", "c", "/"),
            "/v1/a/c/x//y/": ("v1", "a", "c", "x//y/"),
        }
        for path, expected in cases.items():
            self.assertEqual(split_api_path(path), expected, path)

    def test_refusals(self) -> None:
        cases = {
            "/v1//c/o": 404, "/v1/a//o": 404, "/v1///o": 404, "/v1/a//": 404, "/": 404, "//v1/a": 404, "": 404,
            "/v1": 412, "/v1/": 412, "/info asdf": 412, "/anything": 412,
            "/v2/a": 400, "/v1.0/a/c": 400, "/info/x": 400,
        }
        for path, status in cases.items():
            err = self.assertRaises(BadPath, split_api_path, path)
            self.assertEqual(err.status, status, path)
        self.assertEqual(self.assertRaises(BadPath, split_api_path, "/v1").reason, "Bad URL")


class DecodeTests(SynchronousTestCase):
    def test_percent_and_utf8(self) -> None:
        self.assertEqual(decode_path(b"/a/%2F/%C3%A9/\xf0\x9f\x98\x80"), "/a///\u00e9/\U0001f600")

    def test_invalid_utf8_and_nul(self) -> None:
        for raw in (b"/a/%FF", b"/a/\xff", b"/a/%00", b"/a/%C3"):
            err = self.assertRaises(BadPath, decode_path, raw)
            self.assertEqual((err.status, err.reason), (412, "Invalid UTF8 or contains NULL"))


class BackendPathTests(SynchronousTestCase):
    def test_levels(self) -> None:
        self.assertEqual(parse_backend_path(b"/d1/12/AUTH_a"), BackendPath("d1", 12, "AUTH_a"))
        self.assertEqual(parse_backend_path(b"/d1/12/AUTH_a/c"), BackendPath("d1", 12, "AUTH_a", "c"))
        self.assertEqual(
            parse_backend_path(b"/d1/12/AUTH_a/c/o/%2F/p"), BackendPath("d1", 12, "AUTH_a", "c", "o///p")
        )

    def test_bad(self) -> None:
        for raw in (b"/d1/x/a", b"/d1/-1/a", b"/d1/1", b"/../1/a", b"/d1/99999999999/a"):
            self.assertEqual(self.assertRaises(BadPath, parse_backend_path, raw).status, 400)
