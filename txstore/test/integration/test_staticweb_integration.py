"""
staticweb on a real all-in-one (``txstore-aio``): a container made a site with the ``swift``
command-line client (``post -r``, ``post -m web-…``), browsed with curl without a token: the
index page (a UTF-8 name), the redirect to a directory's slash, an HTML listing with its style
sheet, the error page; a token sees the plain API unless it asks for ``X-Web-Mode``.
"""

from __future__ import annotations

import subprocess

from swiftclient import client as swift

from txstore.test.integration.test_proxy_integration import ClusterCase

INDEX = "índex.html"


class StaticWebTests(ClusterCase):
    def curl(self, path: str, *args: str) -> tuple[str, str]:
        """(status line and headers, body) of a GET with curl."""
        done = subprocess.run(["curl", "-s", "-S", "-D", "-", f"http://127.0.0.1:{self.cluster.port}{path}", *args],
                              capture_output=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        head, _, body = done.stdout.decode("utf-8").partition("\r\n\r\n")
        return head, body

    def test_a_site_from_the_swift_cli(self) -> None:
        url, token = self.cluster.token()
        swift.put_container(url, token, "site")
        swift.put_object(url, token, "site", INDEX, contents=b"<p>home</p>", content_type="text/html")
        swift.put_object(url, token, "site", "404error.html", contents=b"<p>lost</p>", content_type="text/html")
        swift.put_object(url, token, "site", "site.css", contents=b"h1 {}", content_type="text/css")
        swift.put_object(url, token, "site", "docs/guide.txt", contents=b"guide", content_type="text/plain")
        for args in (("-r", ".r:*,.rlistings"), ("-m", f"web-index:{INDEX}"), ("-m", "web-error:error.html"),
                     ("-m", "web-listings:true"), ("-m", "web-listings-css:site.css")):
            posted = self.cluster.swift_cli("post", *args, "site")
            self.assertEqual(posted.returncode, 0, posted.stderr)
        self.assertIn("staticweb", self.cluster.swift_cli("capabilities").stdout)

        head, body = self.curl("/v1/AUTH_test/site/")
        self.assertTrue(head.startswith("HTTP/1.1 200"), head)
        self.assertEqual(body, "<p>home</p>")
        head, _ = self.curl("/v1/AUTH_test/site")
        self.assertTrue(head.startswith("HTTP/1.1 301"), head)
        self.assertIn(f"Location: http://127.0.0.1:{self.cluster.port}/v1/AUTH_test/site/\r\n", head)
        head, _ = self.curl("/v1/AUTH_test/site/docs")
        self.assertIn("/v1/AUTH_test/site/docs/\r\n", head)
        head, body = self.curl("/v1/AUTH_test/site/docs/")
        self.assertIn("Content-Type: text/html; charset=UTF-8", head)
        self.assertNotIn("X-Backend-Content-Generator", head)
        self.assertIn("<title>Listing of /v1/AUTH_test/site/docs/</title>", body)
        self.assertIn('<a href="./guide.txt">guide.txt</a>', body)
        self.assertIn('href="../site.css"', body)
        head, body = self.curl("/v1/AUTH_test/site/nothing.html")
        self.assertTrue(head.startswith("HTTP/1.1 404"), head)
        self.assertEqual(body, "<p>lost</p>")

        # a token sees the API (a listing as text), or the site when it asks for it
        head, body = self.curl("/v1/AUTH_test/site/", "-H", f"X-Auth-Token: {token}")
        self.assertIn("docs/guide.txt\n", body)
        head, body = self.curl("/v1/AUTH_test/site/", "-H", f"X-Auth-Token: {token}", "-H", "X-Web-Mode: true")
        self.assertEqual(body, "<p>home</p>")
        # not readable: no site, no redirect
        self.assertEqual(self.cluster.swift_cli("post", "-r", "", "site").returncode, 0)
        head, _ = self.curl("/v1/AUTH_test/site")
        self.assertTrue(head.startswith("HTTP/1.1 401"), head)
