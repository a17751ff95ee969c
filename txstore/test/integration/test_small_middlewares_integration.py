"""
crossdomain and etag_quoter on a real all-in-one (``txstore-aio``), with curl and the ``swift``
client: the policy document, a container's choice of quoted ETags set and shown back, its
objects' ETags quoted for curl while ``swift download`` still checks them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from swiftclient import client as swift

from txstore.test.integration.test_proxy_integration import ClusterCase


class SmallMiddlewareTests(ClusterCase):
    def curl(self, *args: str) -> tuple[int, dict[str, str], bytes]:
        done = subprocess.run(["curl", "-s", "-D", "-", *args], capture_output=True, timeout=60)
        head, _, body = done.stdout.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), headers, body

    def test_crossdomain_and_quoted_etags(self) -> None:
        base = f"http://127.0.0.1:{self.cluster.port}"
        status, headers, body = self.curl(f"{base}/crossdomain.xml")
        self.assertEqual((status, headers["content-type"]), (200, "application/xml"))
        self.assertIn(b'<allow-access-from domain="*" secure="false" />', body)

        url, token = self.cluster.token()
        data = b"quoted" * 1000
        etag = hashlib.md5(data).hexdigest()
        swift.put_container(url, token, "q")
        swift.put_object(url, token, "q", "o", contents=data)
        auth = ("-H", f"X-Auth-Token: {token}")
        self.assertEqual(self.curl("-I", *auth, f"{base}/v1/AUTH_test/q/o")[1]["etag"], etag)
        posted = self.cluster.swift_cli("post", "-H", "X-Container-Rfc-Compliant-Etags: true", "q")
        self.assertEqual(posted.returncode, 0, posted.stderr)
        self.assertEqual(swift.head_container(url, token, "q").get("x-container-rfc-compliant-etags"), "True")
        self.assertEqual(self.curl("-I", *auth, f"{base}/v1/AUTH_test/q/o")[1]["etag"], f'"{etag}"')
        work = Path(self.mktemp()).absolute()
        os.makedirs(work)
        downloaded = self.cluster.swift_cli("download", "q", "o", "-o", str(work / "o"))
        self.assertEqual(downloaded.returncode, 0, downloaded.stderr)
        self.assertEqual((work / "o").read_bytes(), data)
        # the sysmeta itself is never shown nor taken from a client
        status, headers, _ = self.curl("-I", *auth, f"{base}/v1/AUTH_test/q")
        self.assertNotIn("x-container-sysmeta-rfc-compliant-etags", headers)
        self.cluster.swift_cli("post", "-H", "X-Container-Rfc-Compliant-Etags: false", "q")
        self.assertEqual(self.curl("-I", *auth, f"{base}/v1/AUTH_test/q/o")[1]["etag"], etag)
