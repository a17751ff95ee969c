"""
CORS on a real all-in-one (``txstore-aio``): a container's allowed origins set with the ``swift``
command-line client; curl sends what a browser sends (a preflight ``OPTIONS`` without a token,
then the request with ``Origin``): allowed and refused preflights, the headers on answers in
strict mode, a temporary URL fetched across origins. Then a real browser (Debian's headless
Chromium, when installed) runs a page of another origin that reads a temporary URL, writes an
object with a token (a preflight first) and is refused a container that allows no origin.
"""

from __future__ import annotations

import json
import subprocess

from unittest import SkipTest

from swiftclient import client as swift

from txstore.test.support import BROWSER, NO_BROWSER, serve_pages
from txstore.test.integration.test_proxy_integration import ClusterCase

PAGE = """<html><body><pre id="out">not run</pre><script>
async function run() {
  const out = [];
  try {
    const r = await fetch(%(tempurl)s);
    out.push("tempurl " + r.status + " " + (await r.text()) + " color=" + r.headers.get("X-Object-Meta-Public-Color"));
  } catch (e) { out.push("tempurl blocked"); }
  try {
    const r = await fetch(%(proxy)s + "/v1/AUTH_test/web/from-page",
                          {method: "PUT", headers: {"X-Auth-Token": %(token)s}, body: "written by a page"});
    out.push("put " + r.status);
  } catch (e) { out.push("put blocked"); }
  try {
    const r = await fetch(%(proxy)s + "/v1/AUTH_test/closed/o", {headers: {"X-Auth-Token": %(token)s}});
    out.push("closed " + r.status);
  } catch (e) { out.push("closed blocked"); }
  document.getElementById("out").textContent = out.join("|");
}
run();
</script></body></html>
"""


class CORSTests(ClusterCase):
    def curl(self, method: str, path: str, *headers: str) -> tuple[int, dict[str, str]]:
        """(status, headers with lower-case names) of a request with curl."""
        args = ["curl", "-s", "-o", "/dev/null", "-D", "-", "-X", method]
        for header in headers:
            args += ["-H", header]
        done = subprocess.run([*args, path if path.startswith("http") else
                               f"http://127.0.0.1:{self.cluster.port}{path}"], capture_output=True, timeout=60)
        lines = done.stdout.decode().split("\r\n")
        found = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if value:
                found[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), found

    def test_browser_exchanges(self) -> None:
        url, token = self.cluster.token()
        info = json.loads(subprocess.run(["curl", "-s", f"http://127.0.0.1:{self.cluster.port}/info"],
                                         capture_output=True, timeout=60).stdout)
        self.assertIs(info["swift"]["strict_cors_mode"], True)
        swift.put_container(url, token, "web")
        swift.put_object(url, token, "web", "data.json", contents=b"{}", headers={"X-Object-Meta-Color": "red"})
        posted = self.cluster.swift_cli("post", "-m", "Access-Control-Allow-Origin:http://app.example",
                                        "-m", "Access-Control-Max-Age:600", "web")
        self.assertEqual(posted.returncode, 0, posted.stderr)
        path = "/v1/AUTH_test/web/data.json"

        status, headers = self.curl("OPTIONS", path, "Origin: http://app.example",
                                    "Access-Control-Request-Method: GET",
                                    "Access-Control-Request-Headers: X-Auth-Token")
        self.assertEqual(status, 200)
        self.assertEqual(headers["access-control-allow-origin"], "http://app.example")
        self.assertEqual(headers["access-control-max-age"], "600")
        self.assertEqual(headers["access-control-allow-headers"], "X-Auth-Token")
        self.assertIn("GET", headers["access-control-allow-methods"])
        self.assertEqual(self.curl("OPTIONS", path, "Origin: http://evil.example",
                                   "Access-Control-Request-Method: GET")[0], 401)
        self.assertEqual(self.curl("OPTIONS", path, "Origin: http://app.example")[0], 401)

        status, headers = self.curl("GET", path, "Origin: http://app.example", f"X-Auth-Token: {token}")
        self.assertEqual(status, 200)
        self.assertEqual(headers["access-control-allow-origin"], "http://app.example")
        self.assertIn("x-object-meta-color", headers["access-control-expose-headers"].split(", "))
        status, headers = self.curl("GET", path, "Origin: http://evil.example", f"X-Auth-Token: {token}")
        self.assertEqual(status, 200)
        self.assertNotIn("access-control-allow-origin", headers)

        # a temporary URL used from the page: no token, the same headers
        self.assertEqual(self.cluster.swift_cli("post", "-m", "Temp-URL-Key:k").returncode, 0)
        made = self.cluster.swift_cli("tempurl", "GET", "3600", f"http://127.0.0.1:{self.cluster.port}{path}", "k")
        status, headers = self.curl("GET", made.stdout.strip(), "Origin: http://app.example")
        self.assertEqual(status, 200)
        self.assertEqual(headers["access-control-allow-origin"], "http://app.example")

    def test_a_page_of_another_origin_in_a_browser(self) -> None:
        if BROWSER is None:
            raise SkipTest(NO_BROWSER)
        url, token = self.cluster.token()
        proxy = f"http://127.0.0.1:{self.cluster.port}"
        page = {}
        origin = serve_pages(self, lambda path: page["html"])  # another port: another origin

        swift.put_container(url, token, "web", {"X-Container-Meta-Access-Control-Allow-Origin": origin})
        swift.put_container(url, token, "closed")
        swift.put_object(url, token, "web", "hello", contents=b"hello",
                         headers={"X-Object-Meta-Public-Color": "red"})  # what a temp URL's answer keeps
        swift.put_object(url, token, "closed", "o", contents=b"secret")
        self.assertEqual(self.cluster.swift_cli("post", "-m", "Temp-URL-Key:k").returncode, 0)
        made = self.cluster.swift_cli("tempurl", "GET", "3600", f"{proxy}/v1/AUTH_test/web/hello", "k")
        page["html"] = PAGE % {"tempurl": json.dumps(made.stdout.strip()), "proxy": json.dumps(proxy),
                               "token": json.dumps(token)}

        shown = subprocess.run([BROWSER, "--no-sandbox", "--disable-gpu", "--dump-dom", "--virtual-time-budget=10000",
                                f"{origin}/page.html"], capture_output=True, timeout=120)
        results = shown.stdout.decode().partition('<pre id="out">')[2].partition("</pre>")[0].split("|")
        self.assertEqual(results, ["tempurl 200 hello color=red", "put 201", "closed blocked"], shown.stderr[-2000:])
        self.assertEqual(swift.get_object(url, token, "web", "from-page")[1], b"written by a page")
