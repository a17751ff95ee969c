"""
formpost over an in-memory store (`MemorySwift`): the streaming multipart parser (every split
of a body, its refusals, what it holds with a 1 GiB part), forms signed with account and
container keys in each digest, files stored under the form's prefix with their types and
expiry, redirects, and every refusal (expired, bad or missing signature, no key, too many
files, a file too large, bad numbers, a broken body, a refused upload) answered with Swift's
text and leaving nothing stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txstore.interfaces import IByteSource
from txstore.middleware.formpost import FormPost, OPTIONS, info_of
from txstore.middleware.multipart import (
    END, NEED_DATA, PART_END, Data, MalformedMultipart, MultipartParser, PartStart, parse_parameters,
)
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse
from txstore.test.swift_fake import MemorySwift
from txstore.test.unit.test_tempurl import Authorizing, FakeKeys

NOW = 1_800_000_000
A = "/v1/AUTH_a"
KEY = b"account-secret"
CKEY = b"container-secret"
BOUNDARY = "----WebKitFormBoundaryx7Yz"


def settings(**overrides) -> dict:
    found = {option.name: option.default for option in OPTIONS}
    found.update(overrides)
    return found


def sign(key: bytes, path: str, redirect: str = "", max_file_size: int = 1024, max_file_count: int = 10,
         expires: int = NOW + 600, digest: str = "sha256") -> str:
    """The signature as Swift's docs compute it, written out here independently."""
    body = f"{path}\n{redirect}\n{max_file_size}\n{max_file_count}\n{expires}".encode()
    return hmac.new(key, body, getattr(hashlib, digest)).hexdigest()


def form(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes, str | None]],
         boundary: str = BOUNDARY, after: list[tuple[str, str]] = ()) -> bytes:
    """A browser's multipart/form-data body: the fields, then (field, filename, data, type) files."""
    out = bytearray()
    for name, value in fields:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for field, filename, data, kind in files:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'.encode()
        if kind:
            out += f"Content-Type: {kind}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    for name, value in after:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def signed_fields(path: str, key: bytes = KEY, redirect: str = "", max_file_size: int = 1024,
                  max_file_count: int = 10, expires: int = NOW + 600, signature: str | None = None,
                  digest: str = "sha256") -> list[tuple[str, str]]:
    sig = signature if signature is not None else sign(key, path, redirect, max_file_size, max_file_count, expires,
                                                       digest)
    return [("redirect", redirect), ("max_file_size", str(max_file_size)), ("max_file_count", str(max_file_count)),
            ("expires", str(expires)), ("signature", sig)]


@implementer(IByteSource)
class Chunks:
    """A client's body in pieces of a given size (made as they are read: a 1 GiB body costs nothing)."""

    def __init__(self, pieces) -> None:
        self.pieces = iter(pieces)
        self.stopped = False

    def read(self) -> Deferred:
        return succeed(next(self.pieces, b""))

    def stop(self) -> None:
        self.stopped = True


def events(parser: MultipartParser, data: bytes, step: int) -> list:
    found = []
    at = 0
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            if at >= len(data):
                parser.feed_eof()
            else:
                parser.feed(data[at:at + step])
                at += step
            continue
        if isinstance(event, Data) and found and isinstance(found[-1], Data):
            found[-1] = Data(found[-1].data + event.data)
        else:
            found.append(event)
        if event is END:
            return found


class ParserTests(SynchronousTestCase):
    def test_every_split_gives_the_same_events(self) -> None:
        tricky = b"--" + BOUNDARY.encode() + b"\r\nnot"  # the boundary, but not after a CRLF
        body = b"\r\n" + form([("a", "1"), ("b", "")], [("f", "x.txt", tricky, "text/plain"),
                                                       ("g", "y", b"\r\n\r\n", None)])
        expected = events(MultipartParser(BOUNDARY.encode()), body, len(body))
        self.assertEqual(expected[0], PartStart({"content-disposition": 'form-data; name="a"'}))
        self.assertEqual(expected[1], Data(b"1"))
        self.assertEqual(expected[2], PART_END)
        self.assertEqual(expected[4:6], [PART_END, PartStart({"content-disposition":
                                                              'form-data; name="f"; filename="x.txt"',
                                                              "content-type": "text/plain"})])
        self.assertEqual(expected[6], Data(b"--" + BOUNDARY.encode() + b"\r\nnot"))
        self.assertEqual(expected[-3:], [Data(b"\r\n\r\n"), PART_END, END])
        for step in range(1, len(body) + 1):
            self.assertEqual(events(MultipartParser(BOUNDARY.encode()), body, step), expected, step)

    def test_refusals(self) -> None:
        cases = [
            (b"garbage\r\n--b\r\n\r\nx\r\n--b--", "invalid starting boundary"),
            (b"--b\r\n\r\nno end", "the body ends inside a part"),
            (b"--b\r\nBad header\r\n\r\nx\r\n--b--", "a part has a malformed header line"),
            (b"--b\r\n" + b"X: " + b"y" * 20000, "a part's headers are too long"),
            (b"--bX\r\n\r\n", "a boundary line has more after the boundary"),
            (b"--b\r\n\r\nx\r\n--b", "the body ends without its closing boundary"),
            (b"", "invalid starting boundary"),
        ]
        for body, reason in cases:
            with self.assertRaises(MalformedMultipart, msg=body[:20]) as caught:
                events(MultipartParser(b"b"), body, 7)
            self.assertEqual(str(caught.exception), reason)
        self.assertRaises(MalformedMultipart, MultipartParser, b"")
        self.assertRaises(MalformedMultipart, MultipartParser, b"x" * 71)

    def test_a_gigabyte_part_is_never_held(self) -> None:
        parser = MultipartParser(b"b")
        parser.feed(b'--b\r\nContent-Disposition: form-data; name="f"; filename="big"\r\n\r\n')
        self.assertIsInstance(parser.next_event(), PartStart)
        piece = b"z" * (1 << 20)
        held = passed = 0
        for _ in range(1024):
            parser.feed(piece)
            while (event := parser.next_event()) is not NEED_DATA:
                passed += len(event.data)
            held = max(held, parser.held)
        parser.feed(b"\r\n--b--")
        rest = []
        while (event := parser.next_event()) is not END:
            rest.append(event)
        self.assertEqual(passed + sum(len(e.data) for e in rest if isinstance(e, Data)), 1 << 30)
        self.assertLessEqual(held, 8)  # the tail that could begin a delimiter

    def test_parameters(self) -> None:
        self.assertEqual(parse_parameters('form-data; name="f"; filename="a; \\"b\\".txt"'),
                         ("form-data", {"name": "f", "filename": 'a; "b".txt'}))
        self.assertEqual(parse_parameters("Multipart/Form-Data; boundary=abc ; charset=x"),
                         ("multipart/form-data", {"boundary": "abc", "charset": "x"}))
        self.assertEqual(parse_parameters("form-data;name=a;flag"), ("form-data", {"name": "a", "flag": ""}))


class Refusing:
    """A stage below that refuses uploads named ``refuse-*`` with 413, as a quota does."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        if request.method == "PUT" and "/refuse-" in request.decoded_path:
            request.discard_body()
            return SwiftResponse.text(413, "Upload exceeds quota.")
        return await self.app(request)


class FormPostTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemorySwift()
        self.store.containers.add(f"{A}/c")
        self.keys = FakeKeys()
        self.keys.accounts["AUTH_a"] = {"temp-url-key": KEY.decode()}
        self.authorizing = Authorizing(Refusing(self.store))
        self.now = float(NOW)
        self.app = FormPost(self.authorizing, settings(), self.keys, lambda: self.now)

    def post(self, path: str, body: bytes, boundary: str = BOUNDARY, step: int = 1000, **headers: str):
        headers.setdefault("Content-Type", f"multipart/form-data; boundary={boundary}")
        source = Chunks(body[i:i + step] for i in range(0, len(body), step))
        request = SwiftRequest("POST", path, HeaderMap(headers), body=source, trans_id="tx")
        response = self.successResultOf(ensureDeferred(self.app(request)))
        return response

    def stored(self) -> dict[str, bytes]:
        return {path: s.body for path, s in self.store.objects.items()}

    def test_files_are_stored_under_the_prefix(self) -> None:
        path = f"{A}/c/up-"
        body = form(signed_fields(path), [("f1", "a.txt", b"first file", "text/plain"),
                                          ("f2", "b.bin", b"\x00\r\n--second", None)])
        response = self.post(path, body, step=7)
        self.assertEqual((response.status, response.body), (201, b"201 Created"))
        self.assertEqual(self.stored(), {f"{A}/c/up-a.txt": b"first file", f"{A}/c/up-b.bin": b"\x00\r\n--second"})
        self.assertEqual(self.store.objects[f"{A}/c/up-a.txt"].headers["Content-Type"], "text/plain")
        puts = [call for call in self.store.calls if call.method == "PUT"]
        self.assertEqual([call.source for call in puts], ["FP", "FP"])
        self.assertEqual(puts[0].headers["Transfer-Encoding"], "chunked")
        self.assertTrue(puts[0].headers["User-Agent"].endswith("FormPost"))
        # each PUT was authorized by the key's scope: the account
        self.assertEqual([allowed for _, allowed in self.authorizing.decided], [True, True])

    def test_a_container_path_gets_a_slash_and_a_container_key_its_container(self) -> None:
        self.keys.accounts["AUTH_a"] = {}
        self.keys.containers[("AUTH_a", "c")] = {"temp-url-key-2": CKEY.decode()}
        path = f"{A}/c"
        sig = hmac.new(CKEY, f"{path}\n\n1024\n10\n{NOW + 600}".encode(), hashlib.sha512).digest()
        fields = signed_fields(path, signature="sha512:" + base64.urlsafe_b64encode(sig).decode().rstrip("="))
        response = self.post(path, form(fields, [("f", "o", b"data", None)]))
        self.assertEqual(response.status, 201)
        self.assertEqual(self.stored(), {f"{A}/c/o": b"data"})

    def test_redirect(self) -> None:
        path = f"{A}/c/"
        redirect = "https://app.example/done?x=1"
        body = form(signed_fields(path, redirect=redirect), [("f", "o", b"data", None)])
        response = self.post(path, body)
        self.assertEqual(response.status, 303)
        self.assertEqual(response.headers["Location"], redirect + "&status=201&message=")
        self.assertIn(b"Click to continue", response.body)
        self.assertEqual(self.stored(), {f"{A}/c/o": b"data"})

    def test_expiry_and_delete_headers(self) -> None:
        path = f"{A}/c/"
        fields = signed_fields(path) + [("x_delete_after", "60"), ("x_delete_at", str(NOW + 99))]
        self.assertEqual(self.post(path, form(fields, [("f", "o", b"d", None)])).status, 201)
        put = [call for call in self.store.calls if call.method == "PUT"][0]
        self.assertEqual((put.headers["X-Delete-After"], put.headers["X-Delete-At"]), ("60", str(NOW + 99)))

    def assert_refused(self, response, status: int, text: bytes) -> None:
        self.assertEqual((response.status, response.body), (status, text))
        self.assertEqual(self.stored(), {})

    def test_signature_refusals_store_nothing(self) -> None:
        path = f"{A}/c/"
        files = [("f", "o", b"data", None)]
        cases = [
            (signed_fields(path, expires=NOW - 1), 401, b"FormPost: Form Expired"),
            (signed_fields(path, key=b"wrong"), 401, b"FormPost: Invalid Signature"),
            (signed_fields(path, signature=""), 401, b"FormPost: Invalid Signature"),
            (signed_fields(path, signature="nothex"), 401, b"FormPost: Invalid Signature"),
            (signed_fields(f"{A}/c/other"), 401, b"FormPost: Invalid Signature"),
            ([], 400, b"400 Bad Request\r\nFormPost: Max File Count Exceeded"),
            ([("max_file_count", "1")], 401, b"FormPost: Form Expired"),
            (signed_fields(path)[:-1] + [("expires", "soon")], 400, b"FormPost: expired not an integer"),
            (signed_fields(path) + [("max_file_size", "big")], 400, b"FormPost: max_file_size not an integer"),
            (signed_fields(path) + [("max_file_count", "x")], 400, b"FormPost: max_file_count not an integer"),
            (signed_fields(path) + [("x_delete_at", "x")], 400,
             b"FormPost: x_delete_at not an integer: Unix timestamp required."),
            (signed_fields(path) + [("x_delete_after", "")], 400,
             b"FormPost: x_delete_after not an integer: Number of seconds required."),
        ]
        for fields, status, text in cases:
            self.assert_refused(self.post(path, form(fields, files)), status, text)
        # a changed field breaks the signature
        fields = signed_fields(path) + [("max_file_size", "999999")]
        self.assert_refused(self.post(path, form(fields, files)), 401, b"FormPost: Invalid Signature")
        # no key at all
        self.keys.accounts["AUTH_a"] = {}
        self.assert_refused(self.post(path, form(signed_fields(path), files)), 401, b"FormPost: Invalid Signature")

    def test_sha1_only_when_allowed(self) -> None:
        path = f"{A}/c/"
        body = form(signed_fields(path, digest="sha1"), [("f", "o", b"data", None)])
        self.app = FormPost(self.authorizing, settings(allowed_digests=("sha256", "sha512")), self.keys,
                            lambda: self.now)
        self.assert_refused(self.post(path, body), 401, b"FormPost: Invalid Signature")
        self.app = FormPost(self.authorizing, settings(), self.keys, lambda: self.now)
        self.assertEqual(self.post(path, body).status, 201)

    def test_too_many_files_takes_back_what_was_stored(self) -> None:
        path = f"{A}/c/"
        files = [("f", name, b"data", None) for name in ("one", "two", "three")]
        response = self.post(path, form(signed_fields(path, max_file_count=2), files))
        self.assert_refused(response, 400, b"400 Bad Request\r\nFormPost: Max File Count Exceeded")
        deletes = [call.path for call in self.store.calls if call.method == "DELETE"]
        self.assertEqual(deletes, [f"{A}/c/one", f"{A}/c/two"])
        # with a redirect the refusal is told there
        response = self.post(path, form(signed_fields(path, redirect="http://x/", max_file_count=1), files))
        self.assertEqual(response.status, 303)
        self.assertEqual(response.headers["Location"], "http://x/?status=400&message=max%20file%20count%20exceeded")
        self.assertEqual(self.stored(), {})

    def test_a_file_too_large_stores_nothing(self) -> None:
        path = f"{A}/c/"
        files = [("f", "small", b"x" * 10, None), ("f", "big", b"x" * 11, None)]
        response = self.post(path, form(signed_fields(path, max_file_size=10), files), step=3)
        self.assert_refused(response, 400, b"FormPost: max_file_size exceeded")

    def test_a_refused_upload_is_the_answer_and_stores_nothing(self) -> None:
        path = f"{A}/c/"
        files = [("f", "fine", b"x", None), ("f", "refuse-me", b"y", None)]
        response = self.post(path, form(signed_fields(path), files))
        self.assert_refused(response, 413, b"413 Request Entity Too Large")

    def test_no_files(self) -> None:
        path = f"{A}/c/"
        response = self.post(path, form(signed_fields(path), [("f", "", b"", None)]))
        self.assert_refused(response, 400, b"400 Bad Request\r\nFormPost: No Files To Process")

    def test_malformed_bodies(self) -> None:
        path = f"{A}/c/"
        good = form(signed_fields(path), [("f", "o", b"data", None)])
        self.assert_refused(self.post(path, b"nonsense" + good), 400, b"FormPost: invalid starting boundary")
        self.assert_refused(self.post(path, good[:-30]), 400, b"FormPost: the body ends inside a part")
        self.assert_refused(self.post(path, good, boundary=""), 400, b"FormPost: invalid starting boundary")
        self.assert_refused(self.post(path, good, **{"Content-Type": "multipart/form-data"}), 400,
                            b"FormPost: invalid starting boundary")
        # a file whose body breaks mid-way after another was stored: both gone
        two = form(signed_fields(path, max_file_size=5000), [("f", "a", b"data", None), ("f", "b", b"y" * 3000, None)])
        self.assert_refused(self.post(path, two[:-1500]), 400, b"FormPost: the body ends inside a part")

    def test_other_requests_pass(self) -> None:
        request = SwiftRequest("POST", f"{A}/c/o", HeaderMap({"X-Object-Meta-A": "b"}), trans_id="tx")
        self.store.put(f"{A}/c/o", b"x")
        self.assertEqual(self.successResultOf(ensureDeferred(self.app(request))).status, 202)
        response = self.post(f"{A}", form([], []))
        self.assertEqual((response.status, response.body), (400, b"FormPost: the form's URL must name a container"))

    def test_a_gigabyte_file_is_streamed(self) -> None:
        """A 1 GiB file field goes to the PUT a read at a time: what the parser holds stays small."""
        path = f"{A}/c/"
        head = form(signed_fields(path, max_file_size=1 << 31), [])
        head = head[:head.rindex(b"--" + BOUNDARY.encode() + b"--")]
        head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="big"\r\n\r\n'.encode()
        piece = b"z" * (1 << 20)
        held = []

        class Sink:
            async def __call__(self, request: SwiftRequest) -> SwiftResponse:
                size = 0
                while data := await request.body.read():
                    size += len(data)
                    held.append(request.body.reader.parser.held)
                return SwiftResponse.empty(201, {"X-Size": str(size)})

        app = FormPost(Sink(), settings(), self.keys, lambda: self.now)
        source = Chunks([head, *(piece for _ in range(1024)), f"\r\n--{BOUNDARY}--\r\n".encode()])
        request = SwiftRequest("POST", path, HeaderMap({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}),
                               body=source, trans_id="tx")
        response = self.successResultOf(ensureDeferred(app(request)))
        self.assertEqual(response.status, 201)
        self.assertLess(max(held), 1 << 10)

    def test_info(self) -> None:
        self.assertEqual(info_of(settings()), {"allowed_digests": ["sha1", "sha256", "sha512"],
                                               "deprecated_digests": ["sha1"]})
        self.assertEqual(info_of(settings(allowed_digests=("sha256",))), {"allowed_digests": ["sha256"]})

