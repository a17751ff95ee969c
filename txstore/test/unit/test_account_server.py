"""
Tests for txstore.storage.account_server: the account half of a storage node's backend API,
driven over HTTP in memory.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.timestamps import Timestamp
from txstore.storage.account_server import AccountServer
from txstore.storage.db import AccountBroker
from txstore.storage.db_server import DatabaseAccess
from txstore.storage.db.files import database_path
from txstore.node.server import NodeServer
from txstore.test.unit.test_container_server import (
    HASHER,
    NOW,
    Answer,
    ContainerReports,
    capture_logs,
    http,
    make_context,
    message,
    ts,
)

ZERO = Timestamp(0).internal


class AccountServerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.context = make_context(self)
        self.server = AccountServer(self.context)
        self.node = NodeServer(accounts=self.server, containers=ContainerReports(self.server))

    def request(self, method: str, url: str, headers: dict | None = None, **query: str) -> Answer:
        if query:
            url += "?" + "&".join(f"{k}={quote(v.encode('utf-8'), safe='')}" for k, v in query.items())
        return http(self, self.node, method, url, headers)

    def put(self, offset: float = 0.0, account: str = "a", **headers: str) -> Answer:
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        return self.request("PUT", f"/sda/1/{account}", {"X-Timestamp": ts(offset), **named})

    def report(
        self,
        container: str,
        put: float = 1.0,
        delete: float | None = None,
        objects: int = 0,
        size: int = 0,
        account: str = "a",
        **extra: str,
    ) -> Answer:
        headers = {
            "X-Put-Timestamp": ts(put),
            "X-Delete-Timestamp": ts(delete) if delete is not None else ZERO,
            "X-Object-Count": str(objects),
            "X-Bytes-Used": str(size),
            "X-Backend-Storage-Policy-Index": "0",
            **{name.replace("_", "-"): value for name, value in extra.items()},
        }
        return self.request("PUT", f"/sda/1/{account}/{container}", headers)

    def db_path(self, account: str = "a") -> Path:
        db_hash = HASHER.hash_path(account)
        assert isinstance(db_hash, str)
        return database_path(self.context.devices / "sda", "accounts", 1, db_hash)


class CreateTests(AccountServerTestCase):
    def test_put_creates_then_accepts(self) -> None:
        self.assertEqual(self.put(0).status, 201)
        self.assertTrue(self.db_path().exists())
        self.assertEqual(self.put(1).status, 202)
        self.assertEqual(self.put(0.5).status, 202)  # older: accepted, changes nothing
        head = self.request("HEAD", "/sda/1/a")
        self.assertEqual(head.status, 204)
        for name in ("X-Account-Container-Count", "X-Account-Object-Count", "X-Account-Bytes-Used"):
            self.assertEqual(head.header(name), "0", name)
        self.assertEqual(head.header("X-Timestamp"), Timestamp.from_seconds(NOW).normal)
        self.assertEqual(head.header("X-Put-Timestamp"), ts(1))
        self.assertEqual(head.header("X-Backend-Put-Timestamp"), ts(1))
        self.assertEqual(head.header("Content-Type"), "text/plain; charset=utf-8")
        self.assertIsNone(head.header("X-Account-Status"))

    def test_timestamp_required(self) -> None:
        for method in ("PUT", "DELETE", "POST"):
            answer = self.request(method, "/sda/1/a")
            self.assertEqual((answer.status, answer.body), (400, b"Missing X-Timestamp header\n"), method)
        self.assertEqual(self.request("PUT", "/sda/1/a", {"X-Timestamp": "-1"}).status, 400)
        self.assertFalse(self.db_path().exists())

    def test_missing(self) -> None:
        for method in ("HEAD", "GET"):
            answer = self.request(method, "/sda/1/a")
            self.assertEqual(answer.status, 404)
            self.assertIsNone(answer.header("X-Account-Status"))
        self.assertEqual(self.request("POST", "/sda/1/a", {"X-Timestamp": ts()}).status, 404)
        self.assertEqual(self.request("DELETE", "/sda/1/a", {"X-Timestamp": ts()}).status, 404)

    def test_account_name_limit(self) -> None:
        self.assertEqual(self.put(account="A" * 256).status, 201)
        answer = self.put(account="A" * 257)
        self.assertEqual(answer.status, 400)
        self.assertIn(b"Account name longer than 256 bytes", answer.body)

    def test_missing_device(self) -> None:
        for method in ("PUT", "DELETE", "POST", "GET", "HEAD"):
            self.assertEqual(self.request(method, "/sdz/1/a", {"X-Timestamp": ts()}).status, 507, method)
        answer = self.request(
            "PUT",
            "/sdz/1/a/c",
            {"X-Put-Timestamp": ts(), "X-Delete-Timestamp": ZERO, "X-Object-Count": "0", "X-Bytes-Used": "0"},
        )
        self.assertEqual(answer.status, 507)

    def test_unknown_method(self) -> None:
        answer = self.request("PATCH", "/sda/1/a")
        self.assertEqual((answer.status, answer.header("Allow")), (405, "DELETE, GET, HEAD, POST, PUT"))
        answer = self.request("GET", "/sda/1/a/c")
        self.assertEqual((answer.status, answer.header("Allow")), (405, "PUT"))


class MetadataTests(AccountServerTestCase):
    def test_put_and_post(self) -> None:
        self.put(X_Account_Meta_Quota_Bytes="100", X_Account_Sysmeta_Core_Access_Control='{"read-only":["u"]}',
                 X_Container_Meta_Wrong="ignored")
        head = self.request("HEAD", "/sda/1/a")
        self.assertEqual(head.header("X-Account-Meta-Quota-Bytes"), "100")
        self.assertEqual(head.header("X-Account-Sysmeta-Core-Access-Control"), '{"read-only":["u"]}')
        self.assertIsNone(head.header("X-Container-Meta-Wrong"))
        answer = self.request(
            "POST",
            "/sda/1/a",
            {"X-Timestamp": ts(1), "X-Remove-Account-Meta-Quota-Bytes": "x", "X-Account-Meta-Pet": "\N{SNAKE}"},
        )
        self.assertEqual(answer.status, 204)
        head = self.request("GET", "/sda/1/a")
        self.assertIsNone(head.header("X-Account-Meta-Quota-Bytes"))
        self.assertEqual(head.header("X-Account-Meta-Pet"), "\N{SNAKE}")
        # An older POST loses to what is stored.
        self.request("POST", "/sda/1/a", {"X-Timestamp": ts(0.5), "X-Account-Meta-Pet": "cat"})
        self.assertEqual(self.request("HEAD", "/sda/1/a").header("X-Account-Meta-Pet"), "\N{SNAKE}")

    def test_limits(self) -> None:
        answer = self.put(**{"X_Account_Meta_" + "n" * 129: "v"})
        self.assertEqual(answer.status, 400)
        self.assertIn(b"Metadata name too long", answer.body)
        self.assertFalse(self.db_path().exists())
        self.put()
        headers = {f"X-Account-Meta-K{i}": "v" * 250 for i in range(17)}
        answer = self.request("POST", "/sda/1/a", {"X-Timestamp": ts(1), **headers})
        self.assertEqual((answer.status, answer.body), (400, b"Total metadata too large; max 4096\n"))
        # Swift's limits hold for the stored total too: POSTs that each pass cannot pile up more
        for i in range(4):
            headers = {f"X-Account-Meta-P{i}-{j}": "v" * 250 for j in range(5)}  # 5 x 254 bytes each
            answer = self.request("POST", "/sda/1/a", {"X-Timestamp": ts(1 + i), **headers})
        self.assertEqual((answer.status, answer.body), (400, b"Total metadata too large; max 4096\n"))
        stored = [h for h in self.request("HEAD", "/sda/1/a").headers.getAllRawHeaders()
                  if h[0].lower().startswith(b"x-account-meta-")]
        self.assertEqual(len(stored), 15)  # the refused POST stored nothing
        answer = self.request("POST", "/sda/1/a", {"X-Timestamp": ts(5), **{f"X-Account-Meta-P0-{j}": "" for j in range(5)},
                                                   **{f"X-Account-Meta-Q{j}": "v" for j in range(5)}})
        self.assertEqual(answer.status, 204)  # what a POST removes makes room for what it adds
        for i in range(10):
            self.request("POST", "/sda/1/a", {"X-Timestamp": ts(6), f"X-Account-Meta-N{i}": "1"})
        answer = self.request("POST", "/sda/1/a", {"X-Timestamp": ts(7), **{f"X-Account-Meta-M{i}": "1" for i in range(80)}})
        self.assertEqual((answer.status, answer.body), (400, b"Too many metadata items; max 90\n"))
        self.request("POST", "/sda/1/a", {"X-Timestamp": ts(8), **{f"X-Account-Meta-{n}": "" for n in
                                                                   [*(f"P1-{j}" for j in range(5)), *(f"P2-{j}" for j in range(5)),
                                                                    *(f"Q{j}" for j in range(5)), *(f"N{i}" for i in range(10))]}})
        answer = self.request("POST", "/sda/1/a", {"X-Timestamp": ts(1), "X-Account-Meta-Bad": b"\xc3("})
        self.assertEqual(answer.status, 400)
        self.assertEqual(len([h for h in self.request("HEAD", "/sda/1/a").headers.getAllRawHeaders()
                              if h[0].lower().startswith(b"x-account-meta-")]), 0)


class ContainerReportTests(AccountServerTestCase):
    def test_reports_make_the_listing_and_totals(self) -> None:
        self.put()
        self.assertEqual(self.report("photos", put=1, objects=2, size=30).status, 201)
        self.assertEqual(self.report("docs", put=2, objects=1, size=12, X_Backend_Storage_Policy_Index="1").status, 201)
        head = self.request("HEAD", "/sda/1/a")
        self.assertEqual(head.header("X-Account-Container-Count"), "2")
        self.assertEqual(head.header("X-Account-Object-Count"), "3")
        self.assertEqual(head.header("X-Account-Bytes-Used"), "42")
        plain = self.request("GET", "/sda/1/a")
        self.assertEqual((plain.status, plain.body), (200, b"docs\nphotos\n"))
        self.assertEqual(plain.header("Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(plain.header("X-Account-Container-Count"), "2")
        self.assertEqual(plain.length, len(plain.body))
        as_json = self.request("GET", "/sda/1/a", format="json")
        self.assertEqual(as_json.header("Content-Type"), "application/json; charset=utf-8")
        self.assertEqual(
            as_json.json(),
            [
                {"name": "docs", "count": 1, "bytes": 12, "last_modified": Timestamp.parse(ts(2)).isoformat,
                 "storage_policy": "silver"},
                {"name": "photos", "count": 2, "bytes": 30, "last_modified": Timestamp.parse(ts(1)).isoformat,
                 "storage_policy": "gold"},
            ],
        )
        as_xml = self.request("GET", "/sda/1/a", {"Accept": "application/xml"})
        self.assertEqual(as_xml.header("Content-Type"), "application/xml; charset=utf-8")
        root = ElementTree.fromstring(as_xml.body)
        self.assertEqual((root.tag, root.get("name")), ("account", "a"))
        self.assertEqual(
            [(c.findtext("name"), c.findtext("count"), c.findtext("bytes"), c.findtext("storage_policy")) for c in root],
            [("docs", "1", "12", "silver"), ("photos", "2", "30", "gold")],
        )

    def test_newest_report_wins_and_deletion(self) -> None:
        self.put()
        self.report("c", put=1, objects=5, size=50)
        self.report("c", put=3, objects=7, size=70)
        self.assertEqual(self.report("c", put=2, objects=1, size=1).status, 201)  # older: ignored
        self.assertEqual(self.request("GET", "/sda/1/a", format="json").json()[0]["count"], 7)
        answer = self.report("c", put=3, delete=4)
        self.assertEqual((answer.status, answer.body), (204, b""))
        self.assertEqual(self.request("GET", "/sda/1/a").status, 204)
        self.assertEqual(self.request("HEAD", "/sda/1/a").header("X-Account-Container-Count"), "0")
        self.report("c", put=5, delete=4, objects=1, size=2)  # re-created
        self.assertEqual(self.request("GET", "/sda/1/a").body, b"c\n")

    def test_missing_account(self) -> None:
        self.assertEqual(self.report("c").status, 404)
        self.assertFalse(self.db_path().exists())

    def test_auto_create(self) -> None:
        answer = self.report("c", objects=1, size=3, X_Backend_Auto_Create="true")
        self.assertEqual(answer.status, 201)
        head = self.request("HEAD", "/sda/1/a")
        self.assertEqual(head.header("X-Account-Container-Count"), "1")
        self.assertEqual(head.header("X-Put-Timestamp"), Timestamp.from_seconds(NOW).normal)
        # With an X-Timestamp, that is the account's PUT time.
        self.report("c", account="b", X_Backend_Auto_Create="yes", X_Timestamp=ts(9))
        self.assertEqual(self.request("HEAD", "/sda/1/b").header("X-Put-Timestamp"), ts(9))
        # Anything else than a true value does not create.
        self.assertEqual(self.report("c", account="d", X_Backend_Auto_Create="false").status, 404)

    def test_bad_reports(self) -> None:
        self.put()
        good = {"X-Put-Timestamp": ts(1), "X-Delete-Timestamp": ZERO, "X-Object-Count": "1", "X-Bytes-Used": "2"}
        for missing in good:
            answer = self.request("PUT", "/sda/1/a/c", {k: v for k, v in good.items() if k != missing})
            self.assertEqual(answer.status, 400, missing)
            self.assertIn(missing.encode("ascii"), answer.body)
        for name, value in [("X-Object-Count", "-1"), ("X-Bytes-Used", "many"), ("X-Put-Timestamp", "now"),
                            ("X-Backend-Storage-Policy-Index", "x")]:
            self.assertEqual(self.request("PUT", "/sda/1/a/c", {**good, name: value}).status, 400, name)
        self.assertEqual(self.request("PUT", "/sda/1/a/" + "c" * 257, good).status, 400)
        self.assertEqual(self.request("GET", "/sda/1/a").status, 204)

    def test_odd_container_names(self) -> None:
        self.put()
        names = ["\N{SNAKE}" * 64, "c" * 256, "with space", "caf\N{LATIN SMALL LETTER E WITH ACUTE}", "<&>\"'"]
        for name in names:
            self.assertEqual(self.report(quote(name.encode("utf-8"))).status, 201, name)
        expected = sorted(names)
        self.assertEqual(self.request("GET", "/sda/1/a").body.decode("utf-8").splitlines(), expected)
        self.assertEqual([e["name"] for e in self.request("GET", "/sda/1/a", format="json").json()], expected)
        root = ElementTree.fromstring(self.request("GET", "/sda/1/a", format="xml").body)
        self.assertEqual([c.findtext("name") for c in root], expected)


class ListingTests(AccountServerTestCase):
    names = ["a", "b-1", "b-2", "c", "d-x-1"]

    def setUp(self) -> None:
        super().setUp()
        self.put()
        for name in self.names:
            self.report(name)

    def listing(self, **query: str) -> list[str]:
        answer = self.request("GET", "/sda/1/a", **query)
        self.assertIn(answer.status, (200, 204))
        return answer.body.decode("utf-8").splitlines()

    def test_parameters(self) -> None:
        self.assertEqual(self.listing(limit="2"), ["a", "b-1"])
        self.assertEqual(self.listing(marker="b-2"), ["c", "d-x-1"])
        self.assertEqual(self.listing(end_marker="b-2"), ["a", "b-1"])
        self.assertEqual(self.listing(prefix="b-"), ["b-1", "b-2"])
        self.assertEqual(self.listing(delimiter="-"), ["a", "b-", "c", "d-"])
        self.assertEqual(self.listing(reverse="yes", limit="2"), ["d-x-1", "c"])
        self.assertEqual(self.listing(path="b"), self.names)  # accounts ignore path

    def test_swift_clients_bounds(self) -> None:
        """Multi-character delimiters, NUL in a marker for an inclusive bound, ``limit=2.0``."""
        self.assertEqual(self.listing(delimiter="-x-"), ["a", "b-1", "b-2", "c", "d-x-"])
        self.assertEqual(self.listing(delimiter="-x-", reverse="on"), ["d-x-", "c", "b-2", "b-1", "a"])
        self.assertEqual(self.listing(marker="b-1\x00", end_marker="c\x00"), ["b-2", "c"])
        self.assertEqual(self.listing(reverse="on", marker="c\x00", end_marker="b-1"), ["c", "b-2"])
        self.assertEqual(self.listing(limit="2.0"), ["a", "b-1"])

    def test_bad_parameters(self) -> None:
        self.assertEqual(self.request("GET", "/sda/1/a", limit="10001").status, 412)
        self.assertEqual(self.request("GET", "/sda/1/a", limit="-1").status, 400)
        self.assertEqual(self.request("GET", "/sda/1/a", {"Accept": "image/*"}).status, 406)
        self.assertEqual(self.request("HEAD", "/sda/1/a", {"Accept": "image/*"}).status, 406)

    def test_empty(self) -> None:
        self.put(account="empty")
        plain = self.request("GET", "/sda/1/empty")
        self.assertEqual((plain.status, plain.body), (204, b""))
        as_json = self.request("GET", "/sda/1/empty", format="json")
        self.assertEqual((as_json.status, as_json.body), (200, b"[]"))
        as_xml = self.request("GET", "/sda/1/empty", format="xml")
        self.assertEqual(as_xml.status, 200)
        self.assertEqual(ElementTree.fromstring(as_xml.body).get("name"), "empty")
        self.assertEqual(self.request("GET", "/sda/1/a", prefix="zzz").status, 204)


class DeleteTests(AccountServerTestCase):
    def test_deleted_account(self) -> None:
        self.put()
        self.report("c", objects=1, size=1)
        answer = self.request("DELETE", "/sda/1/a", {"X-Timestamp": ts(2)})
        self.assertEqual((answer.status, answer.header("X-Account-Status")), (204, "Deleted"))
        for method in ("HEAD", "GET"):
            answer = self.request(method, "/sda/1/a")
            self.assertEqual((answer.status, answer.header("X-Account-Status")), (404, "Deleted"), method)
            self.assertEqual(answer.header("X-Backend-Delete-Timestamp"), ts(2))
        answer = self.request("POST", "/sda/1/a", {"X-Timestamp": ts(3), "X-Account-Meta-A": "b"})
        self.assertEqual((answer.status, answer.header("X-Account-Status")), (404, "Deleted"))
        answer = self.request("DELETE", "/sda/1/a", {"X-Timestamp": ts(3)})
        self.assertEqual((answer.status, answer.header("X-Account-Status")), (404, "Deleted"))
        # Not re-created until the reaper and replicator are done with it.
        answer = self.put(4)
        self.assertEqual((answer.status, answer.header("X-Account-Status")), (403, "Deleted"))
        self.assertIn(b"recently deleted", answer.body)
        # Container reports are refused unless the sender insists (the reaper's deletions).
        self.assertEqual(self.report("c", put=1, delete=5).status, 404)
        self.assertEqual(self.report("c", put=1, delete=5, X_Account_Override_Deleted="yes").status, 204)
        broker = AccountBroker(self.db_path())
        self.assertEqual(broker.get_info().container_count, 0)

    def test_delete_older_than_put(self) -> None:
        self.put(5)
        answer = self.request("DELETE", "/sda/1/a", {"X-Timestamp": ts(1)})
        self.assertEqual((answer.status, answer.header("X-Account-Status")), (204, None))
        self.assertEqual(self.request("HEAD", "/sda/1/a").status, 204)


class DatabaseErrorTests(AccountServerTestCase):
    def test_corrupt_database_is_quarantined(self) -> None:
        events = capture_logs(self, DatabaseAccess)
        self.put()
        db = self.db_path()
        db.write_bytes(b"\x00" * 4096)
        server = AccountServer(self.context)  # one that has not opened the file yet
        answer = http(self, NodeServer(accounts=server), "HEAD", "/sda/1/a")
        self.assertEqual(answer.status, 404)
        quarantined = self.context.devices / "sda" / "quarantined" / "accounts" / db.parent.name / db.name
        self.assertTrue(quarantined.exists())
        self.assertFalse(db.exists())
        self.assertIn("quarantined the damaged database", message(events[0]))
        self.assertEqual(http(self, NodeServer(accounts=server), "PUT", "/sda/1/a", {"X-Timestamp": ts(1)}).status, 201)

    def test_close(self) -> None:
        self.put()
        self.successResultOf(self.server.close())

    def test_small_cache_still_serves(self) -> None:
        server = AccountServer(self.context, cache_size=1)
        node = NodeServer(accounts=server)
        statuses = [
            http(self, node, "PUT", f"/sda/1/{account}", {"X-Timestamp": ts(offset)}).status
            for account, offset in (("x", 0), ("y", 0), ("x", 1))
        ]
        self.assertEqual(statuses, [201, 201, 202])
        self.assertEqual(http(self, node, "HEAD", "/sda/1/x").header("X-Put-Timestamp"), ts(1))
