"""
aws-chunked uploads (STREAMING-AWS4-HMAC-SHA256-PAYLOAD): the framer fed at every split, and
the chunk signatures against the S3 API reference's example (66560 bytes of ``a`` in chunks of
64 KiB, then 1 KiB, then the final chunk), a tampered chunk and bad framing refused.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txstore.proxy.messages import BytesSource
from txstore.s3 import sigv4
from txstore.s3.auth import BodyMismatch
from txstore.s3.chunked import ChunkParser, SignedChunks

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
SIGNATURES = ("ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
              "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
              "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9")
KEY = sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")
SCOPE = sigv4.scope("20130524", "us-east-1", "s3")


def example_body(signatures=SIGNATURES, data: bytes = b"a" * 66560) -> bytes:
    first, second = data[:65536], data[65536:]
    return (b"10000;chunk-signature=%s\r\n%s\r\n" % (signatures[0].encode(), first)
            + b"400;chunk-signature=%s\r\n%s\r\n" % (signatures[1].encode(), second)
            + b"0;chunk-signature=%s\r\n\r\n" % signatures[2].encode())


class Pieces(BytesSource):
    """A body arriving in pieces of ``size`` bytes."""

    def __init__(self, data: bytes, size: int) -> None:
        super().__init__(b"")
        self._pieces = [data[i:i + size] for i in range(0, len(data), size)]

    def read(self):
        from twisted.internet.defer import succeed

        return succeed(self._pieces.pop(0) if self._pieces else b"")


class Case(SynchronousTestCase):
    def decode(self, body: bytes, size: int = 1000, length: int = 66560) -> tuple[bytes, SignedChunks]:
        chunks = SignedChunks(Pieces(body, size), KEY, "20130524T000000Z", SCOPE, SEED, length)
        out = []
        while True:
            piece = self.successResultOf(chunks.read())
            if not piece:
                return b"".join(out), chunks
            out.append(piece)

    def test_the_documented_example(self) -> None:
        for size in (3, 1000, 65536, 70000):
            data, _ = self.decode(example_body(), size)
            self.assertEqual(data, b"a" * 66560, size)

    def test_a_tampered_chunk_or_signature_fails(self) -> None:
        tampered = example_body(data=b"a" * 66559 + b"b")
        for body in (tampered, example_body(signatures=(SIGNATURES[0], SIGNATURES[0], SIGNATURES[2])),
                     example_body(signatures=(SIGNATURES[0], SIGNATURES[1], SIGNATURES[0]))):
            chunks = SignedChunks(Pieces(body, 4096), KEY, "20130524T000000Z", SCOPE, SEED, 66560)
            self.assertFails(chunks, "SignatureDoesNotMatch")

    def assertFails(self, chunks: SignedChunks, code: str) -> None:
        failures = []
        for _ in range(100):
            chunks.read().addCallbacks(lambda piece: None, failures.append)
            if failures:
                break
        self.assertEqual(len(failures), 1)
        failures[0].trap(BodyMismatch)
        self.assertEqual(chunks.failed.code, code)

    def test_framing_errors(self) -> None:
        parser = ChunkParser()
        self.assertRaises(ValueError, parser.feed, b"zz;chunk-signature=" + b"0" * 64 + b"\r\n")
        self.assertRaises(ValueError, ChunkParser().feed, b"10;nothing\r\n")
        self.assertRaises(ValueError, ChunkParser().feed, b"1;chunk-signature=" + b"0" * 64 + b"\r\nxYY")
        self.assertRaises(ValueError, ChunkParser().feed, b"1" * 5000)
        done = ChunkParser()
        self.assertEqual(done.feed(b"0;chunk-signature=" + b"a" * 64 + b"\r\n\r\n"), [("last", "a" * 64)])
        self.assertRaises(ValueError, done.feed, b"x")

    def test_a_short_body_or_wrong_length_fails(self) -> None:
        body = example_body()
        chunks = SignedChunks(Pieces(body[:-10], 70000), KEY, "20130524T000000Z", SCOPE, SEED, 66560)
        self.assertFails(chunks, "IncompleteBody")
        chunks = SignedChunks(Pieces(body, 70000), KEY, "20130524T000000Z", SCOPE, SEED, 5)
        self.assertFails(chunks, "IncompleteBody")
        chunks = SignedChunks(Pieces(body + b"junk", 70000), KEY, "20130524T000000Z", SCOPE, SEED, 66560)
        self.assertFails(chunks, "InvalidRequest")
