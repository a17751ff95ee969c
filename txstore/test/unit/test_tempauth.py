"""Tests for txstore.proxy.tempauth: tokens, the auth endpoint and Swift's authorize rules."""

from __future__ import annotations

import json
import re

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txstore.interfaces import IAuthorizer, ITokenStore
from txstore.proxy.account_acl import stored_account_acl
from txstore.proxy.acl import parse_acl
from txstore.proxy.config import TempAuthUser
from txstore.proxy.tempauth import (
    BAD_TOKEN,
    Decision,
    Identity,
    InMemoryTokenStore,
    TempAuth,
)

TOKEN = re.compile(r"^AUTH_tk[0-9a-f]{32}$")

USERS = (
    TempAuthUser("test", "tester", "testing", (".admin",)),
    TempAuthUser("test", "tester3", "testing3"),
    TempAuthUser("test2", "tester2", "testing2", (".admin",)),
    TempAuthUser("admin", "admin", "admin", (".admin", ".reseller_admin")),
    TempAuthUser("ops", "reseller", "r-key", (".reseller_admin",)),
    TempAuthUser("test5", "tester5", "t5", (".admin",), "https://store.example.com/v1/AUTH_test5"),
)


def done(awaitable):
    """What an awaitable that needs no reactor (a login or lookup on a synchronous store) gives."""
    return Deferred.fromCoroutine(awaitable).result


def identity(account: str, user: str, *extra: str) -> Identity:
    return Identity(f"AUTH_{account}", f"{account}:{user}", (f"{account}:{user}", account, *extra))


class TokenStoreTestsMixin:
    """What every ITokenStore does; a subclass supplies ``make_store()``."""

    alice = identity("test", "alice")
    bob = identity("test", "bob", ".admin")

    def make_store(self) -> ITokenStore:
        raise NotImplementedError

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(ITokenStore, self.make_store()))

    def test_issue_and_lookup(self) -> None:
        store = self.make_store()
        a = store.issue(self.alice, 100.0)
        b = store.issue(self.bob, 100.0)
        self.assertNotEqual(a, b)
        self.assertEqual(store.lookup(a, 0.0), self.alice)
        self.assertEqual(store.lookup(b, 99.9), self.bob)

    def test_unknown(self) -> None:
        store = self.make_store()
        self.assertIsNone(store.lookup("AUTH_tk" + "0" * 32, 0.0))
        self.assertIsNone(store.lookup("", 0.0))

    def test_expiry_forgets(self) -> None:
        store = self.make_store()
        token = store.issue(self.alice, 100.0)
        self.assertIsNone(store.lookup(token, 100.0))
        # Forgotten, not merely hidden: even a clock going back does not revive it.
        self.assertIsNone(store.lookup(token, 0.0))

    def test_revoke(self) -> None:
        store = self.make_store()
        token = store.issue(self.alice, 100.0)
        other = store.issue(self.alice, 100.0)
        store.revoke(token)
        store.revoke(token)
        store.revoke("nonsense")
        self.assertIsNone(store.lookup(token, 0.0))
        self.assertEqual(store.lookup(other, 0.0), self.alice)


class InMemoryTokenStoreTests(TokenStoreTestsMixin, SynchronousTestCase):
    def make_store(self) -> InMemoryTokenStore:
        return InMemoryTokenStore()

    def test_token_form(self) -> None:
        self.assertRegex(self.make_store().issue(self.alice, 1.0), TOKEN)

    def test_expired_entries_are_swept(self) -> None:
        store = InMemoryTokenStore(sweep_above=10)
        for _ in range(10):
            store.issue(self.alice, 5.0)
        keeper = store.issue(self.bob, 50.0)
        store.lookup("unknown", 10.0)
        self.assertEqual(len(store), 1)
        self.assertEqual(store.lookup(keeper, 10.0), self.bob)
        self.assertEqual(store.prune(60.0), 1)
        self.assertEqual(len(store), 0)

    def test_bounded(self) -> None:
        """Past max_tokens the tokens nearest expiry go first, the expired ones among them."""
        store = InMemoryTokenStore(max_tokens=8)
        tokens = [store.issue(self.alice, float(t)) for t in range(1, 101)]
        self.assertLessEqual(len(store), 8)
        self.assertEqual(store.lookup(tokens[-1], 0.0), self.alice)
        self.assertIsNone(store.lookup(tokens[0], 0.0))


def make_auth(clock: Clock, token_life: int = 3600) -> TempAuth:
    return TempAuth(
        users=USERS,
        store=InMemoryTokenStore(),
        token_life=token_life,
        reseller_prefix="AUTH",
        clock=clock.seconds,
    )


class AuthenticateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.auth = make_auth(self.clock)

    def login(self, headers: dict, host: str = "proxy:8080", scheme: str = "http"):
        return done(self.auth.authenticate(headers, host, scheme))

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IAuthorizer, self.auth))

    def test_auth_headers(self) -> None:
        result = self.login({"X-Auth-User": "test:tester", "X-Auth-Key": "testing"})
        self.assertEqual(result.status, 200)
        token = result.header("X-Auth-Token")
        self.assertRegex(token, TOKEN)
        self.assertEqual(result.header("x-storage-token"), token)
        self.assertEqual(result.header("X-Storage-Url"), "http://proxy:8080/v1/AUTH_test")
        self.assertEqual(result.header("X-Auth-Token-Expires"), "3600")
        url = result.header("X-Storage-Url")
        self.assertEqual(json.loads(result.body), {"storage": {"default": "local", "local": url}})
        self.assertEqual(result.identity, identity("test", "tester", ".admin"))
        self.assertEqual(done(self.auth.identify(token)), result.identity)

    def test_storage_headers(self) -> None:
        result = self.login({"x-storage-user": "test:tester3", "x-storage-pass": "testing3"})
        self.assertEqual(result.status, 200)
        me = done(self.auth.identify(result.header("X-Auth-Token")))
        self.assertEqual(me, identity("test", "tester3"))

    def test_auth_headers_win(self) -> None:
        result = self.login(
            {
                "X-Auth-User": "test:tester",
                "X-Auth-Key": "testing",
                "X-Storage-User": "test2:tester2",
                "X-Storage-Pass": "wrong",
            }
        )
        self.assertEqual(result.identity.user, "test:tester")

    def test_storage_url_forms(self) -> None:
        https = self.login(
            {"X-Auth-User": "test2:tester2", "X-Auth-Key": "testing2"}, "h.example", "https"
        )
        self.assertEqual(https.header("X-Storage-Url"), "https://h.example/v1/AUTH_test2")
        configured = self.login({"X-Auth-User": "test5:tester5", "X-Auth-Key": "t5"})
        self.assertEqual(
            configured.header("X-Storage-Url"), "https://store.example.com/v1/AUTH_test5"
        )
        self.assertEqual(configured.identity.account, "AUTH_test5")

    def test_configured_url_names_the_account(self) -> None:
        """As in Swift, the last segment of a configured storage URL is the account owned."""
        user = TempAuthUser("x", "y", "k", (".admin",), "http://h/v1/AUTH_elsewhere/")
        self.assertEqual(self.auth.identity_of(user).account, "AUTH_elsewhere")

    def test_groups(self) -> None:
        def groups(name: str, key: str) -> tuple[str, ...]:
            return self.login({"X-Auth-User": name, "X-Auth-Key": key}).identity.groups

        self.assertEqual(groups("test:tester3", "testing3"), ("test:tester3", "test"))
        self.assertEqual(groups("test:tester", "testing"), ("test:tester", "test", ".admin"))
        self.assertEqual(
            groups("admin:admin", "admin"), ("admin:admin", "admin", ".admin", ".reseller_admin")
        )

    def test_bad_credentials(self) -> None:
        for headers in (
            {},
            {"X-Auth-User": "test:tester"},
            {"X-Auth-Key": "testing"},
            {"X-Auth-User": "test:tester", "X-Auth-Key": ""},
            {"X-Auth-User": "test:tester", "X-Auth-Key": "wrong"},
            {"X-Auth-User": "test:tester", "X-Auth-Key": "testing3"},
            {"X-Auth-User": "tester", "X-Auth-Key": "testing"},
            {"X-Auth-User": ":tester", "X-Auth-Key": "testing"},
            {"X-Auth-User": "test:", "X-Auth-Key": "testing"},
            {"X-Auth-User": "test:nobody", "X-Auth-Key": "testing"},
            {"X-Auth-User": "TEST:tester", "X-Auth-Key": "testing"},
            {"X-Storage-User": "test:tester", "X-Storage-Pass": "wrong"},
        ):
            result = self.login(headers)
            self.assertEqual(result.status, 401, headers)
            self.assertIsNone(result.header("X-Auth-Token"))
            self.assertIsNone(result.identity)
            self.assertTrue(result.body)
            self.assertEqual(result.header("WWW-Authenticate"), 'Swift realm="unknown"')

    def test_wrong_method(self) -> None:
        result = done(self.auth.authenticate(
            {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}, "h", "http", method="POST"
        ))
        self.assertEqual(result.status, 400)
        self.assertIsNone(result.header("X-Auth-Token"))

    def test_same_token_within_its_life(self) -> None:
        headers = {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}
        first = self.login(headers)
        self.clock.advance(1000)
        second = self.login(headers)
        self.assertEqual(second.header("X-Auth-Token"), first.header("X-Auth-Token"))
        self.assertEqual(second.header("X-Auth-Token-Expires"), "2600")
        other = self.login({"X-Auth-User": "test:tester3", "X-Auth-Key": "testing3"})
        self.assertNotEqual(other.header("X-Auth-Token"), first.header("X-Auth-Token"))

    def test_new_token_after_expiry(self) -> None:
        headers = {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}
        first = self.login(headers).header("X-Auth-Token")
        self.clock.advance(3599.5)
        self.assertIsNotNone(done(self.auth.identify(first)))
        self.clock.advance(0.5)
        self.assertIsNone(done(self.auth.identify(first)))
        second = self.login(headers)
        self.assertNotEqual(second.header("X-Auth-Token"), first)
        self.assertEqual(second.header("X-Auth-Token-Expires"), "3600")

    def test_new_token_after_revoke(self) -> None:
        headers = {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}
        first = self.login(headers).header("X-Auth-Token")
        self.auth.store.revoke(first)
        self.assertIsNone(done(self.auth.identify(first)))
        self.assertNotEqual(self.login(headers).header("X-Auth-Token"), first)

    def test_identify(self) -> None:
        self.assertIsNone(done(self.auth.identify(None)))
        self.assertIsNone(done(self.auth.identify("")))
        self.assertIsNone(done(self.auth.identify("AUTH_tk" + "a" * 32)))
        token = make_login(self.auth, "test:tester", "testing")
        self.assertEqual(done(self.auth.identify(f" {token} ")).user, "test:tester")


# Who makes the request in the authorize table.
TESTER = identity("test", "tester", ".admin")  # admin of AUTH_test
TESTER3 = identity("test", "tester3")  # plain user of AUTH_test
TESTER2 = identity("test2", "tester2", ".admin")  # admin of another account
RESELLER = identity("ops", "reseller", ".reseller_admin")
SUPER = identity("admin", "admin", ".admin", ".reseller_admin")
ANON = None

ALLOW, OWNER = "allow", "owner"
PUBLIC = ".r:*"
LISTED = ".r:*,.rlistings"

# (who, method, account, container, object, read ACL, write ACL, referer, expected)
RULES = [
    # Reseller admins: anything in any of our accounts, account PUT/DELETE included.
    (RESELLER, "PUT", "AUTH_new", None, None, None, None, None, OWNER),
    (RESELLER, "DELETE", "AUTH_test", None, None, None, None, None, OWNER),
    (RESELLER, "GET", "AUTH_test", "c", "o", None, None, None, OWNER),
    (SUPER, "POST", "AUTH_test2", None, None, None, None, None, OWNER),
    (SUPER, "DELETE", "AUTH_admin", None, None, None, None, None, OWNER),
    (RESELLER, "GET", "AUTH_.system", None, None, None, None, None, 403),
    (RESELLER, "GET", "OTHER_test", None, None, None, None, None, 403),
    # Account admins: anything in their account but creating or deleting it.
    (TESTER, "GET", "AUTH_test", None, None, None, None, None, OWNER),
    (TESTER, "HEAD", "AUTH_test", None, None, None, None, None, OWNER),
    (TESTER, "POST", "AUTH_test", None, None, None, None, None, OWNER),
    (TESTER, "PUT", "AUTH_test", None, None, None, None, None, 403),
    (TESTER, "DELETE", "AUTH_test", None, None, None, None, None, 403),
    (TESTER, "PUT", "AUTH_test", "c", None, None, None, None, OWNER),
    (TESTER, "DELETE", "AUTH_test", "c", None, None, None, None, OWNER),
    (TESTER, "POST", "AUTH_test", "c", None, None, None, None, OWNER),
    (TESTER, "GET", "AUTH_test", "c", None, None, None, None, OWNER),
    (TESTER, "PUT", "AUTH_test", "c", "o", None, None, None, OWNER),
    (TESTER, "DELETE", "AUTH_test", "c", "o", None, None, None, OWNER),
    (TESTER, "COPY", "AUTH_test", "c", "o", None, None, None, OWNER),
    # ...and nothing in another account beyond what its ACLs grant.
    (TESTER, "GET", "AUTH_test2", None, None, None, None, None, 403),
    (TESTER, "GET", "AUTH_test2", "c", "o", None, None, None, 403),
    (TESTER, "PUT", "AUTH_test2", "c", None, None, None, None, 403),
    (TESTER, "GET", "OTHER_test", None, None, None, None, None, 403),
    (TESTER, "GET", "AUTH_", None, None, None, None, None, 403),
    # A plain user of the account: no account or container operations without ACLs.
    (TESTER3, "GET", "AUTH_test", None, None, None, None, None, 403),
    (TESTER3, "HEAD", "AUTH_test", None, None, None, None, None, 403),
    (TESTER3, "POST", "AUTH_test", None, None, None, None, None, 403),
    (TESTER3, "PUT", "AUTH_test", "c", None, None, None, None, 403),
    (TESTER3, "GET", "AUTH_test", "c", None, None, None, None, 403),
    (TESTER3, "GET", "AUTH_test", "c", "o", None, None, None, 403),
    (TESTER3, "PUT", "AUTH_test", "c", "o", None, None, None, 403),
    # Read ACL naming the user or its account: objects and listings, nothing written.
    (TESTER3, "GET", "AUTH_test", "c", "o", "test:tester3", None, None, ALLOW),
    (TESTER3, "HEAD", "AUTH_test", "c", "o", "test:tester3", None, None, ALLOW),
    (TESTER3, "GET", "AUTH_test", "c", None, "test:tester3", None, None, ALLOW),
    (TESTER3, "HEAD", "AUTH_test", "c", None, "test", None, None, ALLOW),
    (TESTER3, "GET", "AUTH_test", "c", "o", "test:other", None, None, 403),
    (TESTER3, "PUT", "AUTH_test", "c", "o", "test:tester3", None, None, 403),
    (TESTER3, "POST", "AUTH_test", "c", None, "test:tester3", None, None, 403),
    (TESTER3, "DELETE", "AUTH_test", "c", None, "test:tester3", None, None, 403),
    # Write ACL: object PUT/POST/DELETE/COPY, but no reads and no container changes.
    (TESTER3, "PUT", "AUTH_test", "c", "o", None, "test:tester3", None, ALLOW),
    (TESTER3, "POST", "AUTH_test", "c", "o", None, "test", None, ALLOW),
    (TESTER3, "DELETE", "AUTH_test", "c", "o", None, "test:tester3", None, ALLOW),
    (TESTER3, "COPY", "AUTH_test", "c", "o", None, "test:tester3", None, ALLOW),
    (TESTER3, "GET", "AUTH_test", "c", "o", None, "test:tester3", None, 403),
    (TESTER3, "PUT", "AUTH_test", "c", None, None, "test:tester3", None, 403),
    (TESTER3, "POST", "AUTH_test", "c", None, None, "test:tester3", None, 403),
    (TESTER3, "PATCH", "AUTH_test", "c", "o", None, "test:tester3", None, 403),
    # Another account's user, by name or by account.
    (TESTER2, "GET", "AUTH_test", "c", "o", "test2:tester2", None, None, ALLOW),
    (TESTER2, "GET", "AUTH_test", "c", None, "test2", None, None, ALLOW),
    (TESTER2, "PUT", "AUTH_test", "c", "o", None, "test2", None, ALLOW),
    (TESTER2, "PUT", "AUTH_test", "c", "o", None, "test:tester2", None, 403),
    (TESTER2, "GET", "AUTH_test", "c", "o", "AUTH_test2", None, None, 403),
    # TempAuth has no wildcards, nor ACL grants to its special groups.
    (TESTER2, "GET", "AUTH_test", "c", "o", "*:*", None, None, 403),
    (TESTER2, "GET", "AUTH_test", "c", "o", "test2:*", None, None, 403),
    (TESTER2, "PUT", "AUTH_test", "c", "o", None, "*:tester2", None, 403),
    # Anonymous: nothing without an ACL, and 401 so the client logs in.
    (ANON, "GET", "AUTH_test", None, None, None, None, None, 401),
    (ANON, "PUT", "AUTH_test", None, None, None, None, None, 401),
    (ANON, "GET", "AUTH_test", "c", None, None, None, None, 401),
    (ANON, "GET", "AUTH_test", "c", "o", None, None, None, 401),
    (ANON, "GET", "OTHER_test", "c", "o", PUBLIC, None, None, 401),
    (ANON, "GET", "AUTH_test", "c", "o", "test", None, None, 401),
    # Public read: objects for anyone; listings only with .rlistings.
    (ANON, "GET", "AUTH_test", "c", "o", PUBLIC, None, None, ALLOW),
    (ANON, "HEAD", "AUTH_test", "c", "o", PUBLIC, None, "http://x.org/", ALLOW),
    (ANON, "GET", "AUTH_test", "c", None, PUBLIC, None, None, 401),
    (ANON, "GET", "AUTH_test", "c", None, LISTED, None, None, ALLOW),
    (ANON, "HEAD", "AUTH_test", "c", None, LISTED, None, None, ALLOW),
    (ANON, "GET", "AUTH_test", None, None, LISTED, None, None, 401),
    (ANON, "PUT", "AUTH_test", "c", "o", LISTED, None, None, 401),
    (ANON, "DELETE", "AUTH_test", "c", "o", LISTED, None, None, 401),
    (ANON, "POST", "AUTH_test", "c", None, LISTED, None, None, 401),
    # Write ACLs never let an anonymous request in.
    (ANON, "PUT", "AUTH_test", "c", "o", PUBLIC, "test", None, 401),
    (ANON, "PUT", "AUTH_test", "c", "o", None, "*:*", None, 401),
    # Referrer rules.
    (ANON, "GET", "AUTH_test", "c", "o", ".r:example.com", None, "http://example.com/a", ALLOW),
    (ANON, "GET", "AUTH_test", "c", "o", ".r:example.com", None, "http://evil.com/a", 401),
    (ANON, "GET", "AUTH_test", "c", "o", ".r:example.com", None, None, 401),
    (ANON, "GET", "AUTH_test", "c", "o", ".r:.example.com", None, "http://w.example.com/", ALLOW),
    (ANON, "GET", "AUTH_test", "c", "o", ".r:*,.r:-bad.com", None, "http://bad.com/", 401),
    (ANON, "GET", "AUTH_test", "c", None, ".r:.e.com,.rlistings", None, "http://w.e.com/", ALLOW),
    (ANON, "GET", "AUTH_test", "c", None, ".r:.e.com,.rlistings", None, "http://evil/", 401),
    # A public container is public to other accounts' users too; a denial for them is 403.
    (TESTER2, "GET", "AUTH_test", "c", "o", PUBLIC, None, None, ALLOW),
    (TESTER2, "GET", "AUTH_test", "c", None, PUBLIC, None, None, 403),
    (TESTER2, "GET", "AUTH_test", "c", None, LISTED, None, None, ALLOW),
    (TESTER2, "GET", "AUTH_test", "c", "o", ".r:*,.r:-bad.com", None, "http://bad.com/", 403),
    # ...and a user named in the ACL may list a public container without .rlistings.
    (TESTER3, "GET", "AUTH_test", "c", None, ".r:*,test:tester3", None, None, ALLOW),
    # CORS preflight goes through to the proxy.
    (ANON, "OPTIONS", "AUTH_test", "c", "o", None, None, None, ALLOW),
    (ANON, "OPTIONS", "OTHER_test", "c", "o", None, None, None, 401),
]


class AuthorizeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.auth = make_auth(Clock())

    def test_rules(self) -> None:
        failures = []
        for row in RULES:
            who, method, account, container, obj, read, write, referer, expected = row
            decision = self.auth.authorize(
                who,
                method,
                account,
                container,
                obj,
                parse_acl(read) if read is not None else None,
                parse_acl(write, write=True) if write is not None else None,
                referer,
            )
            if expected == OWNER:
                ok = decision.allowed and decision.is_owner and decision.status is None
            elif expected == ALLOW:
                ok = decision.allowed and not decision.is_owner and decision.status is None
            else:
                ok = not decision.allowed and decision.status == expected and not decision.is_owner
                ok = ok and bool(decision.reason)
            if not ok:
                failures.append(f"{row!r} -> {decision!r}")
        self.assertEqual(failures, [])

    def test_account_acl_levels(self) -> None:
        acl = stored_account_acl('{"admin":["test:tester3"],"read-write":["test2"],"read-only":["test:ro"]}')
        reader = identity("test", "ro")
        # (who, method, container, object, expected): the levels over AUTH_test
        rows = [
            (TESTER3, "POST", None, None, OWNER), (TESTER3, "GET", None, None, OWNER),
            (TESTER3, "DELETE", "c", "o", OWNER), (TESTER3, "PUT", None, None, 403),
            (TESTER3, "DELETE", None, None, 403),
            (TESTER2, "GET", None, None, ALLOW), (TESTER2, "HEAD", None, None, ALLOW),
            (TESTER2, "POST", None, None, 403), (TESTER2, "PUT", "c", None, ALLOW),
            (TESTER2, "DELETE", "c", None, ALLOW), (TESTER2, "POST", "c", None, ALLOW),
            (TESTER2, "PUT", "c", "o", ALLOW), (TESTER2, "GET", "c", "o", ALLOW),
            (reader, "GET", None, None, ALLOW), (reader, "GET", "c", None, ALLOW),
            (reader, "HEAD", "c", "o", ALLOW), (reader, "PUT", "c", "o", 403), (reader, "POST", "c", None, 403),
            (identity("test", "nobody"), "GET", "c", "o", 403), (ANON, "GET", "c", "o", 401),
        ]
        failures = []
        for who, method, container, obj, expected in rows:
            decision = self.auth.authorize(who, method, "AUTH_test", container, obj, None, None, None, acl)
            outcome = ((OWNER if decision.is_owner else ALLOW) if decision.allowed else decision.status)
            if outcome != expected:
                failures.append((who and who.user, method, container, obj, outcome, expected))
        self.assertEqual(failures, [])
        # an ACL names users and accounts, never tempauth's special groups; a bad stored one grants nothing
        self.assertIsNone(stored_account_acl('{"admin":[]}'))
        self.assertIsNone(stored_account_acl("not json"))
        self.assertIsNone(stored_account_acl('{"admin":[".admin"]}').level((".admin",)))

    def test_empty_names_are_none(self) -> None:
        """An empty container or object in the path means the level above, as None does."""
        acl = parse_acl(PUBLIC)
        decision = self.auth.authorize(None, "GET", "AUTH_test", "c", "", acl, None, None)
        self.assertEqual(decision.status, 401)
        decision = self.auth.authorize(TESTER, "PUT", "AUTH_test", "", None, None, None, None)
        self.assertEqual(decision.status, 403)

    def test_method_case(self) -> None:
        decision = self.auth.authorize(TESTER, "get", "AUTH_test", None, None, None, None, None)
        self.assertTrue(decision.allowed)

    def test_bad_token(self) -> None:
        self.assertEqual(BAD_TOKEN, Decision(False, 401, BAD_TOKEN.reason))
        self.assertFalse(BAD_TOKEN.is_owner)

    def test_tokens_to_decisions(self) -> None:
        """From a login to a decision, with the real identity a token carries."""
        token = make_login(self.auth, "test:tester3", "testing3")
        me = done(self.auth.identify(token))
        acl = parse_acl("test:tester3")
        decision = self.auth.authorize(me, "GET", "AUTH_test", "c", "o", acl, None, None)
        self.assertTrue(decision.allowed)
        decision = self.auth.authorize(me, "GET", "AUTH_test", None, None, None, None, None)
        self.assertEqual((decision.allowed, decision.status), (False, 403))
        admin = done(self.auth.identify(make_login(self.auth, "test5:tester5", "t5")))
        decision = self.auth.authorize(admin, "POST", "AUTH_test5", None, None, None, None, None)
        self.assertTrue(decision.is_owner)


def make_login(auth: TempAuth, user: str, key: str) -> str:
    return done(auth.authenticate({"X-Auth-User": user, "X-Auth-Key": key}, "h", "http")).header(
        "X-Auth-Token"
    )


class FromSettingsTests(SynchronousTestCase):
    def test_from_filter(self) -> None:
        settings = {"token_life": 60, "reseller_prefix": "AUTH", "user_test_tester": ("testing", (".admin",), None)}
        clock = Clock()
        auth = TempAuth.from_filter(settings, clock.seconds)
        token = make_login(auth, "test:tester", "testing")
        self.assertRegex(token, TOKEN)
        clock.advance(60)
        self.assertIsNone(done(auth.identify(token)))
        self.assertEqual(auth.account_prefix, "AUTH_")


class SignedTokenTests(SynchronousTestCase):
    """Tokens any proxy of the cluster validates: signed with a key from the cluster secret."""

    def setUp(self) -> None:
        from txstore.common.hashing import PathHasher
        from txstore.proxy.tempauth import SignedTokenStore

        self.store_class = SignedTokenStore
        self.one = SignedTokenStore.for_cluster(PathHasher(b"pre", b"suf"))
        self.other_proxy = SignedTokenStore.for_cluster(PathHasher(b"pre", b"suf"))
        self.identity = Identity("AUTH_test", "test:tester", ("test:tester", "test", ".admin"))

    def test_a_token_from_one_proxy_works_on_another_until_it_expires(self) -> None:
        token = self.one.issue(self.identity, 1000.0)
        self.assertTrue(token.startswith("AUTH_tk"))
        self.assertEqual(self.other_proxy.lookup(token, 999.0), self.identity)
        self.assertIsNone(self.other_proxy.lookup(token, 1000.0))
        self.assertNotEqual(self.one.issue(self.identity, 1000.0), token)  # each one unguessable

    def test_another_cluster_secret_or_a_changed_token_is_refused(self) -> None:
        from txstore.common.hashing import PathHasher

        token = self.one.issue(self.identity, 1000.0)
        elsewhere = self.store_class.for_cluster(PathHasher(b"pre", b"other"))
        self.assertIsNone(elsewhere.lookup(token, 0.0))
        body, _, mac = token.partition(".")
        forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
        self.assertIsNone(self.one.lookup(forged, 0.0))
        for junk in ("", "AUTH_tk", "AUTH_tk.", "AUTH_tkabc", "nonsense." + mac):
            self.assertIsNone(self.one.lookup(junk, 0.0), junk)

    def test_revoke_is_per_proxy(self) -> None:
        token = self.one.issue(self.identity, 1000.0)
        self.one.revoke(token)
        self.assertIsNone(self.one.lookup(token, 0.0))
        self.assertEqual(self.other_proxy.lookup(token, 0.0), self.identity)

    def test_chosen_in_the_filter(self) -> None:
        from txstore.common.hashing import PathHasher

        settings = {"token_life": 60, "reseller_prefix": "AUTH", "token_store": "signed",
                    "user_test_tester": ("testing", (".admin",), None)}
        first = TempAuth.from_filter(settings, lambda: 0.0, hasher=PathHasher(b"", b"s"))
        second = TempAuth.from_filter(settings, lambda: 0.0, hasher=PathHasher(b"", b"s"))
        result = done(first.authenticate({"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}, "h", "http"))
        token = result.header("X-Auth-Token")
        self.assertEqual(done(second.identify(token)).user, "test:tester")  # a second proxy knows it
        self.assertRaises(ValueError, TempAuth.from_filter, settings, lambda: 0.0)
