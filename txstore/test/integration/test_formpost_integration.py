"""
formpost on a real all-in-one (``txstore-aio``): forms posted by curl (``-F``, as a browser
encodes them) with the account's key set by the ``swift`` client: files stored under the prefix
with their types, a redirect, and the refusals (expired, altered, too many files, a file too
large, over a container quota), each a 4xx that leaves the container as it was; a 64 MiB file
whose upload leaves the proxy's peak memory where it was. Then a real browser (Debian's
headless Chromium, when installed) submits a form of a page from another origin and lands on
the redirect with ``status=201``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import time
from pathlib import Path
from unittest import SkipTest
from urllib.parse import parse_qs, urlsplit

from swiftclient import client as swift

from txstore.test.support import BROWSER, NO_BROWSER, serve_pages
from txstore.test.integration.test_proxy_integration import ClusterCase

KEY = "form-key"
PAGE = """<html><body><form id="f" method="POST" enctype="multipart/form-data" action=%(action)s>
<input type="hidden" name="redirect" value=%(redirect)s>
<input type="hidden" name="max_file_size" value="1048576">
<input type="hidden" name="max_file_count" value="2">
<input type="hidden" name="expires" value="%(expires)d">
<input type="hidden" name="signature" value="%(signature)s">
<input type="file" name="file1" id="file1">
<input type="file" name="file2" id="file2">
</form><script>
function pick(id, name, text, type) {
  const dt = new DataTransfer();
  dt.items.add(new File([text], name, {type: type}));
  document.getElementById(id).files = dt.files;
}
pick("file1", "hello.txt", "hello from a browser", "text/plain");
pick("file2", "data.json", '{"a": 1}', "application/json");
document.getElementById("f").submit();
</script></body></html>
"""


def signature(path: str, redirect: str, max_file_size: int, max_file_count: int, expires: int) -> str:
    body = f"{path}\n{redirect}\n{max_file_size}\n{max_file_count}\n{expires}".encode()
    return hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()


class FormPostTests(ClusterCase):
    def setUp(self) -> None:
        super().setUp()
        self.url, self.token = self.cluster.token()
        self.work = Path(self.mktemp()).absolute()
        os.makedirs(self.work)
        self.assertEqual(self.cluster.swift_cli("post", "-m", f"Temp-URL-Key:{KEY}").returncode, 0)
        swift.put_container(self.url, self.token, "up")

    def post(self, path: str, *fields: str, files: tuple[str, ...] = (), max_file_size: int = 1024,
             max_file_count: int = 2, redirect: str = "", expires: int | None = None, sig: str | None = None):
        """(status, headers, body) of curl posting a signed form with ``files`` (name=@path;type=...)."""
        expires = int(time.time()) + 600 if expires is None else expires
        sig = sig or signature(path, redirect, max_file_size, max_file_count, expires)
        args = ["curl", "-s", "-D", str(self.work / "headers"), "-o", str(self.work / "body"),
                "-F", f"redirect={redirect}", "-F", f"max_file_size={max_file_size}",
                "-F", f"max_file_count={max_file_count}", "-F", f"expires={expires}", "-F", f"signature={sig}"]
        for field in (*fields, *files):
            args += ["-F", field]
        subprocess.run([*args, f"http://127.0.0.1:{self.cluster.port}{path}"], check=True, timeout=120,
                       cwd=str(self.work))
        blocks = [b for b in (self.work / "headers").read_bytes().decode("latin-1").split("\r\n\r\n") if b.strip()]
        lines = blocks[-1].split("\r\n")  # the last answer's, after any 100 Continue
        headers = {name.strip().lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in lines[1:]) if value}
        return int(lines[0].split()[1]), headers, (self.work / "body").read_bytes()

    def file(self, name: str, data: bytes) -> str:
        (self.work / name).write_bytes(data)
        return name

    def names(self) -> list[str]:
        return [o["name"] for o in swift.get_container(self.url, self.token, "up")[1]]

    def test_forms_posted_by_curl(self) -> None:
        path = "/v1/AUTH_test/up/in-"
        self.file("a.txt", b"first")
        self.file("b.bin", b"\x00second\r\n--")
        status, _, body = self.post(path, files=("f1=@a.txt;type=text/x-first", "f2=@b.bin"))
        self.assertEqual((status, body), (201, b"201 Created"))
        self.assertEqual(self.names(), ["in-a.txt", "in-b.bin"])
        headers, data = swift.get_object(self.url, self.token, "up", "in-a.txt")
        self.assertEqual((data, headers["content-type"]), (b"first", "text/x-first"))
        self.assertEqual(swift.get_object(self.url, self.token, "up", "in-b.bin")[1], b"\x00second\r\n--")
        # a redirect, and an expiring object
        status, headers, _ = self.post(path, "x_delete_after=3600", files=("f=@a.txt;filename=r.txt",),
                                       redirect="http://app.example/done")
        self.assertEqual((status, headers.get("location")), (303, "http://app.example/done?status=201&message="))
        self.assertIn("x-delete-at", swift.head_object(self.url, self.token, "up", "in-r.txt"))

        before = self.names()
        self.file("c.txt", b"third")
        self.file("big", b"x" * 1025)
        one = ("f1=@a.txt;filename=x1",)
        two = ("f1=@a.txt;filename=x1", "f2=@b.bin;filename=x2")
        refusals = [
            (dict(expires=int(time.time()) - 1), one, 401, b"FormPost: Form Expired"),
            (dict(sig="0" * 64), one, 401, b"FormPost: Invalid Signature"),
            (dict(max_file_count=1, sig=signature(path, "", 1024, 2, int(time.time()) + 600)), one, 401,
             b"FormPost: Invalid Signature"),
            ({}, (*two, "f3=@c.txt;filename=x3"), 400, b"400 Bad Request\r\nFormPost: Max File Count Exceeded"),
            ({}, (one[0], "f3=@big;filename=x3"), 400, b"FormPost: max_file_size exceeded"),
        ]
        for options, files, status, text in refusals:
            got = self.post(path, files=files, **options)
            self.assertEqual((got[0], got[2]), (status, text), options)
            self.assertEqual(self.names(), before)  # nothing stored by a refused form
        # a body that is not multipart, a form without a container
        done = subprocess.run(["curl", "-s", "-w", " %{http_code}", "-H",
                               "Content-Type: multipart/form-data; boundary=zz", "--data-binary", "not a form",
                               f"http://127.0.0.1:{self.cluster.port}{path}"],
                              capture_output=True, timeout=60)
        self.assertEqual(done.stdout, b"FormPost: invalid starting boundary 400")
        self.assertEqual(self.post("/v1/AUTH_test", files=("f=@a.txt",))[0], 400)
        # a quota below formpost (the container holds more already) refuses the upload: 413
        self.assertEqual(self.cluster.swift_cli("post", "-m", "quota-bytes:8", "up").returncode, 0)
        status, _, body = self.post("/v1/AUTH_test/up/q-", files=("f1=@a.txt", "f2=@b.bin"))
        self.assertEqual((status, body), (413, b"413 Request Entity Too Large"))
        self.assertEqual(self.names(), before)

    def test_a_large_file_is_streamed(self) -> None:
        """64 MiB through a form: the proxy's peak memory grows by far less than the file."""
        pid = int((self.cluster.root / "run" / "proxy.pid").read_text())
        peak = lambda: int([line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()  # noqa
                            if line.startswith("VmHWM")][0]) * 1024
        before = peak()
        data = os.urandom(1 << 20) * 64
        self.file("large", data)
        status, _, body = self.post("/v1/AUTH_test/up/", files=("f=@large",), max_file_size=1 << 30)
        self.assertEqual((status, body), (201, b"201 Created"))
        self.assertEqual(swift.head_object(self.url, self.token, "up", "large")["etag"], hashlib.md5(data).hexdigest())
        self.assertLess(peak() - before, 24 << 20)

    def test_a_form_submitted_by_a_browser(self) -> None:
        if BROWSER is None:
            raise SkipTest(NO_BROWSER)
        landed: list[dict] = []
        page = {}

        def site(path: str) -> str:
            if path.startswith("/done"):
                landed.append(parse_qs(urlsplit(path).query, keep_blank_values=True))
                return f"<html><body><pre id='out'>{json.dumps(landed[-1])}</pre></body></html>"
            return page["html"]

        origin = serve_pages(self, site)
        path = "/v1/AUTH_test/up/browser/"
        redirect = f"{origin}/done"
        expires = int(time.time()) + 600
        page["html"] = PAGE % {"action": json.dumps(f"http://127.0.0.1:{self.cluster.port}{path}"),
                               "redirect": json.dumps(redirect), "expires": expires,
                               "signature": signature(path, redirect, 1048576, 2, expires)}
        shown = subprocess.run([BROWSER, "--no-sandbox", "--disable-gpu", "--dump-dom", "--virtual-time-budget=10000",
                                f"{origin}/form.html"], capture_output=True, timeout=120)
        self.assertEqual(landed, [{"status": ["201"], "message": [""]}], shown.stderr[-2000:])
        self.assertIn(b'"status": ["201"]', shown.stdout)
        self.assertEqual(self.names(), ["browser/data.json", "browser/hello.txt"])
        headers, data = swift.get_object(self.url, self.token, "up", "browser/hello.txt")
        self.assertEqual((data, headers["content-type"]), (b"hello from a browser", "text/plain"))
        self.assertEqual(swift.get_object(self.url, self.token, "up", "browser/data.json")[1], b'{"a": 1}')
