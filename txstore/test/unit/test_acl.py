"""Tests for txstore.proxy.acl: Swift's V1 container ACL syntax and referrer matching."""

from twisted.trial.unittest import SynchronousTestCase

from txstore.proxy.acl import (
    EMPTY_ACL,
    ContainerACL,
    InvalidACL,
    ReferrerRule,
    format_acl,
    normalise_acl,
    parse_acl,
    referer_host,
    referrer_allowed,
)
from txstore.test.support import assert_table


class ParseTests(SynchronousTestCase):
    def test_empty(self) -> None:
        for value in (None, "", "  ", ",", " , ,, "):
            acl = parse_acl(value)
            self.assertEqual(acl, EMPTY_ACL, value)
            self.assertFalse(acl)
            self.assertEqual(format_acl(acl), "")

    def test_public_read(self) -> None:
        acl = parse_acl(".r:*")
        self.assertEqual(acl.referrers, (ReferrerRule("*"),))
        self.assertFalse(acl.listings)
        self.assertEqual(acl.groups, ())

    def test_every_kind_of_element(self) -> None:
        acl = parse_acl(".r:example.com,.r:.example.org,.r:-bad.com,.rlistings,test:tester,test2")
        self.assertEqual(
            acl.referrers,
            (
                ReferrerRule("example.com"),
                ReferrerRule(".example.org"),
                ReferrerRule("bad.com", deny=True),
            ),
        )
        self.assertTrue(acl.listings)
        self.assertEqual(acl.groups, ("test:tester", "test2"))

    def test_whitespace_and_spellings_are_tidied(self) -> None:
        cases = {
            "bob, sue": "bob,sue",
            " bob , sue ": "bob,sue",
            "bob,,,sue": "bob,sue",
            ".referrer : *": ".r:*",
            ".ref:*.example.com": ".r:.example.com",
            ".referer:- *.Thief.COM": ".r:-.thief.com",
            ".r:*, .rlistings": ".r:*,.rlistings",
            "test : tester": "test:tester",
        }
        assert_table(self, normalise_acl, cases)

    def test_order_is_kept(self) -> None:
        """A client reads back the header it wrote, in its order."""
        raw = "test2:tester2, .r:*,.rlistings , test"
        self.assertEqual(normalise_acl(raw), "test2:tester2,.r:*,.rlistings,test")

    def test_round_trip(self) -> None:
        value = ".r:*,.r:-.bad.com,.rlistings,a:b,c"
        self.assertEqual(parse_acl(format_acl(parse_acl(value))), parse_acl(value))

    def test_wildcard_groups_are_accepted(self) -> None:
        """Keystone-style elements are valid syntax, as in Swift (TempAuth grants nothing)."""
        self.assertEqual(parse_acl("*:*,acct:*,*:user").groups, ("*:*", "acct:*", "*:user"))

    def test_invalid_elements(self) -> None:
        for value in (
            ".r:",
            ".r: ",
            ".r:-",
            ".r:- ",
            ".r",
            ".r:*.",
            ".rlistings:yes",
            ".xyz",
            ".admin",
            ".reseller_admin",
            ".r:http://example.com/",
            ".r:example.com:8080",
            ".r:exa mple.com",
            ".r:ex*ample.com",
            ":user",
            "acct:",
            "my account:me",
            "good, .r:",
        ):
            error = self.assertRaises(InvalidACL, parse_acl, value)
            self.assertIsInstance(error, ValueError)
            self.assertTrue(str(error), value)

    def test_reason_names_the_element(self) -> None:
        error = self.assertRaises(InvalidACL, parse_acl, "a,.xyz")
        self.assertIn(".xyz", str(error))

    def test_write_acl_refuses_referrers(self) -> None:
        for value in (".r:*", ".referrer:example.com", "a,.r:-bad.com"):
            error = self.assertRaises(InvalidACL, parse_acl, value, write=True)
            self.assertIn("write", str(error))

    def test_write_acl_groups(self) -> None:
        acl = parse_acl("test:tester, test2", write=True)
        self.assertEqual(acl.groups, ("test:tester", "test2"))
        # Swift lets .rlistings through in a write ACL; it means nothing there.
        self.assertEqual(normalise_acl(".rlistings", write=True), ".rlistings")


class RefererHostTests(SynchronousTestCase):
    def test_hosts(self) -> None:
        cases = {
            None: "",
            "": "",
            "http://www.Example.com/page.html": "www.example.com",
            "https://example.com:8443/x?y#z": "example.com",
            "http://user:pw@example.com/": "example.com",
            "example.com/page": "",
            "http://[::1/": "",
        }
        assert_table(self, referer_host, cases)


class ReferrerAllowedTests(SynchronousTestCase):
    def check(self, acl_value: str, cases: dict) -> None:
        acl = parse_acl(acl_value)
        for referer, expected in cases.items():
            self.assertEqual(referrer_allowed(acl, referer), expected, (acl_value, referer))

    def test_no_acl(self) -> None:
        self.assertFalse(referrer_allowed(None, "http://example.com/"))
        self.assertFalse(referrer_allowed(EMPTY_ACL, None))
        self.assertFalse(referrer_allowed(parse_acl("test:tester,.rlistings"), None))

    def test_any(self) -> None:
        self.check(".r:*", {None: True, "": True, "garbage": True, "http://a.b/": True})

    def test_exact_host(self) -> None:
        self.check(
            ".r:example.com",
            {
                "http://example.com/index.html": True,
                "https://EXAMPLE.com:81/": True,
                "http://www.example.com/": False,
                "http://example.com.evil.net/": False,
                "http://notexample.com/": False,
                None: False,
            },
        )

    def test_domain_suffix(self) -> None:
        self.check(
            ".r:.example.com",
            {
                "http://www.example.com/": True,
                "http://a.b.example.com/": True,
                "http://example.com/": False,  # as in Swift: the domain itself is not under it
                "http://badexample.com/": False,
                None: False,
            },
        )
        self.check(".r:*.example.com", {"http://www.example.com/": True})

    def test_negation(self) -> None:
        self.check(
            ".r:*,.r:-bad.com",
            {
                "http://bad.com/": False,
                "http://www.bad.com/": True,
                "http://good.com/": True,
                None: True,
            },
        )
        self.check(
            ".r:.example.com,.r:-thief.example.com",
            {"http://www.example.com/": True, "http://thief.example.com/": False},
        )
        self.check(".r:*,.r:-.bad.com", {"http://www.bad.com/": False, "http://bad.com/": True})

    def test_negation_alone_grants_nothing(self) -> None:
        self.check(".r:-bad.com", {"http://good.com/": False, "http://bad.com/": False})

    def test_last_matching_rule_wins(self) -> None:
        """Swift applies referrer rules in order: a later grant overrides an earlier denial."""
        self.check(".r:-bad.com,.r:*", {"http://bad.com/": True})
        self.check(".r:*,.r:-bad.com,.r:bad.com", {"http://bad.com/": True})

    def test_deny_everyone(self) -> None:
        self.check(".r:example.com,.r:-*", {"http://example.com/": False, None: False})

    def test_acl_value_object(self) -> None:
        acl = ContainerACL((".r:example.com",))
        self.assertTrue(referrer_allowed(acl, "http://example.com/"))
