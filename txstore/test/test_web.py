"""Tests for txstore.common.web: raw-path dispatch, plain-text errors, healthcheck."""

from twisted.trial.unittest import SynchronousTestCase
from treq.testing import StubTreq

from txstore.common.web import DispatchResource, healthcheck, plain_text


class DispatchTests(SynchronousTestCase):
    def request(self, handler, method: str, url: str):
        client = StubTreq(DispatchResource(handler))
        response = self.successResultOf(client.request(method, url))
        body = self.successResultOf(response.content())
        return response, body

    def test_sees_raw_path(self) -> None:
        seen = []

        def handler(request):
            seen.append(request.path)
            return plain_text(request, 200, "ok")

        self.request(handler, "GET", "http://h/v1/a/c/x//y/%2F/")
        self.assertEqual(seen, [b"/v1/a/c/x//y/%2F/"])

    def test_plain_text(self) -> None:
        response, body = self.request(lambda r: plain_text(r, 404, "Not Found"), "GET", "http://h/x")
        self.assertEqual(response.code, 404)
        self.assertEqual(body, b"Not Found\n")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
        self.assertEqual(response.length, 10)

    def test_async_handler(self) -> None:
        async def handler(request):
            return plain_text(request, 201, "made")

        response, body = self.request(handler, "PUT", "http://h/x")
        self.assertEqual((response.code, body), (201, b"made\n"))

    def test_errors_become_plain_500(self) -> None:
        def broken(request):
            raise RuntimeError("boom")

        response, body = self.request(broken, "GET", "http://h/x")
        self.assertEqual((response.code, body), (500, b"Internal Server Error\n"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

        async def fails(request):
            raise ValueError("async boom")

        response, body = self.request(fails, "GET", "http://h/x")
        self.assertEqual((response.code, body), (500, b"Internal Server Error\n"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class HealthcheckTests(SynchronousTestCase):
    def test_ok(self) -> None:
        client = StubTreq(DispatchResource(healthcheck))
        response = self.successResultOf(client.get("http://h/healthcheck"))
        self.assertEqual((response.code, self.successResultOf(response.content())), (200, b"OK\n"))
        response = self.successResultOf(client.head("http://h/healthcheck"))
        self.assertEqual((response.code, self.successResultOf(response.content())), (200, b""))

    def test_other_methods(self) -> None:
        client = StubTreq(DispatchResource(healthcheck))
        response = self.successResultOf(client.post("http://h/healthcheck"))
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])
