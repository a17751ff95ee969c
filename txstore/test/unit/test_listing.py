"""Tests for txstore.storage.listing (parameters, entries) and txstore.common.listing_format."""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txstore.common.listing_format import (
    JSON,
    PLAIN,
    TEXT_XML,
    XML,
    ListingError,
    listing_format,
    negotiate_format,
    render_account_listing,
    render_container_listing,
)
from txstore.common.timestamps import Timestamp
from txstore.storage.db import ContainerRecord, ObjectRecord, Subdir
from txstore.storage.listing import (
    ListingParams,
    _listing_time,
    container_entries,
    object_entries,
    parse_listing_params,
)

ODD_NAMES = ["a//b", "dir/", "%2F", "\U0001f600", "<&>\"'", "tab\there", "cr\rlf\n", " spaced "]


def args(**values: Any) -> dict[bytes, list[bytes]]:
    """Query arguments as twisted.web gives them: bytes keys, lists of bytes values."""
    encoded = {}
    for key, value in values.items():
        items = value if isinstance(value, list) else [value]
        encoded[key.encode()] = [v if isinstance(v, bytes) else str(v).encode() for v in items]
    return encoded


class ParamsTests(SynchronousTestCase):
    def assertListingError(self, status: int, query: dict[Any, Any]) -> ListingError:
        error = self.assertRaises(ListingError, parse_listing_params, query)
        self.assertEqual(error.status, status)
        return error

    def test_defaults(self) -> None:
        self.assertEqual(parse_listing_params({}), ListingParams())
        self.assertEqual(ListingParams().limit, 10_000)

    def test_every_parameter(self) -> None:
        params = parse_listing_params(
            args(limit=5, marker="m", end_marker="x", prefix="p", delimiter="/", path="dir", reverse="true")
        )
        self.assertEqual(params, ListingParams(5, "m", "x", "p", "/", "dir", True))
        self.assertEqual(
            params.as_kwargs(),
            {"limit": 5, "marker": "m", "end_marker": "x", "prefix": "p", "delimiter": "/", "reverse": True, "path": "dir",
             "allow_reserved": False},
        )

    def test_str_keys_and_last_value(self) -> None:
        params = parse_listing_params({"marker": ["first", "last"], "prefix": ["é"]})
        self.assertEqual((params.marker, params.prefix), ("last", "é"))

    def test_utf8_values(self) -> None:
        params = parse_listing_params(args(prefix="\U0001f600/".encode(), marker="%2F"))
        self.assertEqual((params.prefix, params.marker), ("\U0001f600/", "%2F"))

    def test_limit(self) -> None:
        self.assertEqual(parse_listing_params(args(limit=0)).limit, 0)
        self.assertEqual(parse_listing_params(args(limit=10_000)).limit, 10_000)
        self.assertEqual(parse_listing_params(args(limit="")).limit, 10_000)
        error = self.assertListingError(412, args(limit=10_001))
        self.assertEqual(error.reason, "Maximum limit is 10000")
        for bad in ("abc", "-1", "1.5", "1e3", "²", " 5", ".0", "5.0.0"):
            self.assertListingError(400, args(limit=bad))
        # A whole number with a zero fraction is that number (Swift's tests send limit/2).
        self.assertEqual(parse_listing_params(args(limit="5000.0")).limit, 5000)
        self.assertEqual(parse_listing_params(args(limit="7.")).limit, 7)
        self.assertListingError(412, args(limit="10001.0"))

    def test_not_utf8(self) -> None:
        for name in ("marker", "end_marker", "prefix", "delimiter", "path"):
            error = self.assertListingError(400, args(**{name: b"\xff\xfe"}))
            self.assertIn(name, error.reason)
        self.assertListingError(400, {"prefix": ["\udcff"]})
        for name in ("delimiter", "path"):
            self.assertListingError(400, args(**{name: b"a\x00b"}))

    def test_nul_in_bounds(self) -> None:
        """NUL in a marker or prefix is a client's way to bound a listing, as Swift allows."""
        params = parse_listing_params(args(marker=b"b1\x00", end_marker=b"a\x00", prefix=b"\x00"))
        self.assertEqual((params.marker, params.end_marker, params.prefix), ("b1\x00", "a\x00", "\x00"))
        self.assertFalse(params.allow_reserved)

    def test_delimiter(self) -> None:
        self.assertEqual(parse_listing_params(args(delimiter="é")).delimiter, "é")
        # Any string, in account listings too (Swift's tests list accounts with "-&").
        for delimiter in ("-&", "ab", "\u0100", "\U0001f600"):
            self.assertEqual(parse_listing_params(args(delimiter=delimiter)).delimiter, delimiter)

    def test_reverse(self) -> None:
        for value in ("true", "1", "yes", "on", "t", "Y", "TRUE"):
            self.assertTrue(parse_listing_params(args(reverse=value)).reverse, value)
        for value in ("false", "0", "no", "", "maybe"):
            self.assertFalse(parse_listing_params(args(reverse=value)).reverse, value)

    def test_path_empty_is_kept(self) -> None:
        self.assertEqual(parse_listing_params(args(path="")).path, "")
        self.assertIsNone(parse_listing_params({}).path)


class FormatTests(SynchronousTestCase):
    def test_format_parameter(self) -> None:
        self.assertEqual(negotiate_format("json", None), JSON)
        self.assertEqual(negotiate_format("XML", None), XML)
        self.assertEqual(negotiate_format(b"plain", "application/json"), PLAIN)
        self.assertEqual(negotiate_format("yaml", "application/json"), PLAIN, "Swift answers unknown formats in plain")
        self.assertEqual(listing_format(args(format="json"), "text/xml"), JSON)
        self.assertEqual(self.assertRaises(ListingError, listing_format, args(format=b"\xff"), None).status, 400)

    def test_no_preference(self) -> None:
        self.assertEqual(negotiate_format(None, None), PLAIN)
        self.assertEqual(negotiate_format("", ""), PLAIN)
        self.assertEqual(negotiate_format(None, "*/*"), PLAIN)

    def test_accept(self) -> None:
        cases = {
            "application/json": JSON,
            "application/xml": XML,
            "text/xml": TEXT_XML,
            "text/*": PLAIN,
            "application/*": JSON,
            "application/json, */*": JSON,
            "application/json;q=0.5, text/xml": TEXT_XML,
            "text/plain;q=0, text/*": TEXT_XML,
            "*/*;q=0.1, application/xml;q=0.2": XML,
            "application/xml, text/xml": XML,
            "text/html, application/json;q=0.9": JSON,
            b"APPLICATION/JSON; charset=utf-8": JSON,
        }
        for header, expected in cases.items():
            self.assertEqual(negotiate_format(None, header), expected, header)

    def test_not_acceptable(self) -> None:
        for header in ("text/html", "image/*", "application/json;q=0, text/*;q=0"):
            error = self.assertRaises(ListingError, negotiate_format, None, header)
            self.assertEqual(error.status, 406, header)

    def test_malformed_accept(self) -> None:
        for header in ("json", "*/json", "text/plain;q=x", "text/plain;q=2"):
            error = self.assertRaises(ListingError, negotiate_format, None, header)
            self.assertEqual(error.status, 400, header)

    def test_content_types(self) -> None:
        self.assertEqual(PLAIN.content_type, "text/plain; charset=utf-8")
        self.assertEqual(TEXT_XML.content_type, "text/xml; charset=utf-8")


def objects(names: list[str]) -> list[ObjectRecord | Subdir]:
    return [
        Subdir(n) if n.endswith("/") else ObjectRecord(n, "1700000000.12345", 12, "text/plain; x=<&>", "d41d8")
        for n in names
    ]


class RenderTests(SynchronousTestCase):
    def test_object_entries(self) -> None:
        entries = object_entries(objects(["o", "dir/"]))
        self.assertEqual(
            entries,
            [
                {
                    "name": "o",
                    "hash": "d41d8",
                    "bytes": 12,
                    "content_type": "text/plain; x=<&>",
                    "last_modified": "2023-11-14T22:13:20.123450",
                },
                {"subdir": "dir/"},
            ],
        )

    def test_container_entries(self) -> None:
        entries = container_entries([ContainerRecord("c", "1700000000.12345_0000000000000001", "0", 3, 30), Subdir("x/")])
        self.assertEqual(
            entries,
            [{"name": "c", "count": 3, "bytes": 30, "last_modified": "2023-11-14T22:13:20.123450"}, {"subdir": "x/"}],
        )

    def test_container_entries_name_their_policy(self) -> None:
        """Swift lists each container's policy by name, and leaves out one it does not know."""
        records = [ContainerRecord("c", "1700000000.12345", "0", 3, 30, storage_policy_index=1),
                   ContainerRecord("d", "1700000000.12345", "0", 0, 0, storage_policy_index=7)]
        entries = container_entries(records, {0: "gold", 1: "silver"}.get)
        self.assertEqual([e.get("storage_policy") for e in entries], ["silver", None])
        self.assertNotIn("storage_policy", entries[1])
        root = ElementTree.fromstring(render_account_listing(XML, "a", entries))
        self.assertEqual([c.findtext("storage_policy") for c in root], ["silver", None])
        self.assertEqual([child.tag for child in root[0]], ["name", "count", "bytes", "last_modified", "storage_policy"])

    @given(st.integers(0, 10**15 - 1), st.integers(0, 3))
    def test_listing_time_matches_timestamp(self, ticks: int, offset: int) -> None:
        stamp = Timestamp(ticks, offset)
        self.assertEqual(_listing_time(stamp.internal), stamp.isoformat)

    def test_plain(self) -> None:
        body = render_container_listing(PLAIN, "c", object_entries(objects(ODD_NAMES[:4])))
        self.assertEqual(body, "a//b\ndir/\n%2F\n\U0001f600\n".encode())
        self.assertEqual(render_container_listing(PLAIN, "c", []), b"")

    def test_json_round_trips_odd_names(self) -> None:
        entries = object_entries(objects(ODD_NAMES))
        body = render_container_listing(JSON, "c", entries)
        body.decode("ascii")  # non-ASCII escaped, as Swift sends it
        self.assertEqual(json.loads(body), entries)
        self.assertEqual(render_account_listing(JSON, "a", []), b"[]")

    def test_xml_container(self) -> None:
        body = render_container_listing(XML, "c", object_entries(objects(["o", "dir/"])))
        self.assertEqual(
            body.decode(),
            '<?xml version="1.0" encoding="UTF-8"?>\n<container name="c">'
            "<object><name>o</name><hash>d41d8</hash><bytes>12</bytes>"
            "<content_type>text/plain; x=&lt;&amp;&gt;</content_type>"
            "<last_modified>2023-11-14T22:13:20.123450</last_modified></object>"
            '<subdir name="dir/"><name>dir/</name></subdir></container>',
        )

    def test_xml_round_trips_odd_names(self) -> None:
        names = ODD_NAMES + ["sub<&>\"'/"]
        body = render_container_listing(XML, "c<&>\"'\t\n\r", object_entries(objects(names)))
        root = ElementTree.fromstring(body)
        self.assertEqual(root.get("name"), "c<&>\"'\t\n\r")
        got = [
            (child.tag, child.findtext("name"), child.get("name"), child.findtext("content_type"))
            for child in root
        ]
        self.assertEqual(
            got,
            [
                ("subdir", n, n, None) if n.endswith("/") else ("object", n, None, "text/plain; x=<&>")
                for n in names
            ],
        )

    def test_xml_account(self) -> None:
        entries = container_entries(
            [ContainerRecord("<c&>", "1700000000.12345", "0", 3, 30), Subdir("\U0001f600/")]
        )
        body = render_account_listing(XML, "AUTH_\U0001f600", entries)
        self.assertEqual(
            body.decode(),
            '<?xml version="1.0" encoding="UTF-8"?>\n<account name="AUTH_\U0001f600">'
            "<container><name>&lt;c&amp;&gt;</name><count>3</count><bytes>30</bytes>"
            "<last_modified>2023-11-14T22:13:20.123450</last_modified></container>"
            '<subdir name="\U0001f600/"><name>\U0001f600/</name></subdir></account>',
        )
        root = ElementTree.fromstring(body)
        self.assertEqual([c.findtext("name") for c in root], ["<c&>", "\U0001f600/"])
        self.assertEqual(
            render_account_listing(XML, "a", []),
            b'<?xml version="1.0" encoding="UTF-8"?>\n<account name="a"></account>',
        )

    @given(st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r")))
    def test_xml_escaping_round_trips(self, text: str) -> None:
        entry = {"name": text, "hash": "h", "bytes": 0, "content_type": text, "last_modified": "t"}
        root = ElementTree.fromstring(render_container_listing(XML, text, [entry, {"subdir": text}]))
        self.assertEqual((root.get("name"), root[0].findtext("name"), root[0].findtext("content_type"),
                          root[1].get("name"), root[1].findtext("name")), (text,) * 5)

    def test_xml_awkward_names_as_swift_writes_them(self) -> None:
        """Escaped by ElementTree; a carriage return kept as one; control characters as they are, as Swift."""
        entry = {"name": "a<&>\"'\r\x01\u00e9", "hash": "h", "bytes": 1, "content_type": "t", "last_modified": "m"}
        body = render_container_listing(XML, "c<&>\"'\t\n\r\u00e9", [entry])
        self.assertEqual(body.decode("utf-8"), (
            '<?xml version="1.0" encoding="UTF-8"?>\n<container name="c&lt;&amp;&gt;&quot;\'&#09;&#10;&#13;\u00e9">'
            "<object><name>a&lt;&amp;&gt;\"'&#13;\x01\u00e9</name><hash>h</hash><bytes>1</bytes>"
            "<content_type>t</content_type><last_modified>m</last_modified></object></container>"))
        self.assertEqual(render_account_listing(XML, "a&", [{"subdir": "d&/"}]),
                         b'<?xml version="1.0" encoding="UTF-8"?>\n<account name="a&amp;">'
                         b'<subdir name="d&amp;/"><name>d&amp;/</name></subdir></account>')
