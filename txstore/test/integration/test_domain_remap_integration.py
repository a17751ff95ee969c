"""
domain_remap on a real all-in-one (``txstore-aio`` serves ``example.net``, as Swift's functional
tests expect): curl with account and container host names writes and reads objects, a static
web site is browsed by its own host name (its redirect stays on that host), other hosts are
left alone, and a host with too many names is a 400.
"""

from __future__ import annotations

import json
import subprocess

from swiftclient import client as swift

from txstore.test.integration.test_proxy_integration import ClusterCase


class DomainRemapTests(ClusterCase):
    def curl(self, host: str, path: str, *args: str) -> tuple[str, str]:
        """(status line and headers, body) of a request with curl, sent with ``Host: host``."""
        done = subprocess.run(["curl", "-s", "-S", "-D", "-", "--path-as-is", "-H", f"Host: {host}",
                               f"http://127.0.0.1:{self.cluster.port}{path}", *args], capture_output=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        head, _, body = done.stdout.decode("utf-8").partition("\r\n\r\n")
        return head, body

    def test_host_names_as_accounts_and_containers(self) -> None:
        url, token = self.cluster.token()
        auth = ("-H", f"X-Auth-Token: {token}")
        info = json.loads(self.curl("127.0.0.1", "/info")[1])
        self.assertEqual(info["domain_remap"], {"default_reseller_prefix": None})

        head, _ = self.curl("auth-test.example.net", "/site", "-X", "PUT", *auth)
        self.assertTrue(head.startswith("HTTP/1.1 201"), head)
        head, _ = self.curl("site.AUTH_test.example.net", "/docs/a.txt", "-X", "PUT", "--data-binary", "A", *auth)
        self.assertTrue(head.startswith("HTTP/1.1 201"), head)
        self.assertEqual(swift.get_object(url, token, "site", "docs/a.txt")[1], b"A")
        self.assertEqual(self.curl("site.auth-test.example.net", "/docs/a.txt", *auth)[1], "A")
        self.assertEqual(self.curl("AUTH_test.example.net:8080", "/site", *auth)[1], "docs/a.txt\n")

        # a web site by its host name: the redirect stays on it
        swift.post_container(url, token, "site", {"X-Container-Read": ".r:*,.rlistings",
                                                  "X-Container-Meta-Web-Listings": "true"})
        head, _ = self.curl("site.AUTH_test.example.net", "/docs")
        self.assertIn("Location: http://site.AUTH_test.example.net/docs/\r\n", head)
        head, body = self.curl("site.AUTH_test.example.net", "/docs/")
        self.assertIn("Listing of /v1/AUTH_test/site/docs/", body)
        head, _ = self.curl("AUTH_test.example.net", "/site")
        self.assertIn("Location: http://AUTH_test.example.net/site/\r\n", head)

        # other hosts, an unknown prefix, too many names
        self.assertEqual(self.curl("www.example.com", "/v1/AUTH_test/site/docs/a.txt")[1], "A")
        head, _ = self.curl("acme.example.net", "/site")  # left alone: a path with no account, Swift's 412
        self.assertTrue(head.startswith("HTTP/1.1 412"), head)
        head, body = self.curl("x.site.AUTH_test.example.net", "/o", "-X", "PUT", "--data-binary", "B", *auth)
        self.assertTrue(head.startswith("HTTP/1.1 400"), head)
        self.assertEqual(body, "Bad domain in host header")
        self.assertEqual([o["name"] for o in swift.get_container(url, token, "site")[1]], ["docs/a.txt"])
