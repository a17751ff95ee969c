"""Tests for txstore.common.config: bad configuration is refused with file, section, option."""

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from txstore.common import config as c
from txstore.test.support import temp_dir, write_file

SCHEMA = c.Schema(
    sections=(
        c.Section(
            "main",
            required=True,
            options=(
                c.Option("count", c.integer(1, 10), 3),
                c.Option("name", c.nonempty_string),
                c.Option("flag", c.boolean, False),
                c.Option("where", c.path, "data"),
                c.Option("ip", c.ip_address, "127.0.0.1"),
                c.Option("size", c.size, "1KiB"),
                c.Option("ratio", c.number(0, 1), 0.5),
                c.Option("kind", c.choice("a", "b"), "a"),
            ),
        ),
        c.Section("extra", patterns=(c.Pattern(r"item_\w+", c.integer()),)),
    ),
    dynamic=((r"group:\d+", c.Section("group:<n>", options=(c.Option("x", c.integer(), 0),))),),
)


class LoadConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)

    def load(self, text: str) -> c.LoadedConfig:
        return c.load_config(write_file(self.dir, "t.conf", text), SCHEMA)

    def error(self, text: str) -> c.ConfigError:
        return self.assertRaises(c.ConfigError, self.load, text)

    def test_values_and_defaults(self) -> None:
        loaded = self.load(
            """
            [main]
            name = n
            flag = yes
            ip = ::1
            size = 5GiB
            [extra]
            item_a = 4
            [group:7]
            x = 2
            """
        )
        main = loaded.section("main")
        self.assertEqual(main["count"], 3)
        self.assertEqual(main["name"], "n")
        self.assertTrue(main["flag"])
        self.assertEqual(main["ip"], "::1")
        self.assertEqual(main["size"], 5 * 2**30)
        self.assertEqual(main["where"], self.dir / "data")
        self.assertEqual(main["kind"], "a")
        self.assertEqual(loaded.section("extra"), {"item_a": 4})
        self.assertEqual(loaded.section("group:7"), {"x": 2})

    def test_relative_paths_from_the_file(self) -> None:
        loaded = self.load("[main]\nname = n\nwhere = ../elsewhere\n")
        self.assertEqual(loaded.section("main")["where"], self.dir / ".." / "elsewhere")
        loaded = self.load("[main]\nname = n\nwhere = /abs\n")
        self.assertEqual(loaded.section("main")["where"], Path("/abs"))

    def test_missing_file(self) -> None:
        err = self.assertRaises(c.ConfigError, c.load_config, self.dir / "nope.conf", SCHEMA)
        self.assertEqual(str(err), f"{self.dir / 'nope.conf'}: no such file")

    def test_bad_value_names_everything(self) -> None:
        err = self.error("[main]\nname = n\ncount = lots\n")
        self.assertEqual(str(err), f"{self.dir / 't.conf'}: [main]: count: 'lots' is not a whole number")
        self.assertEqual((err.section, err.option), ("main", "count"))

    def test_range(self) -> None:
        self.assertIn("above the maximum 10", str(self.error("[main]\nname = n\ncount = 11\n")))
        self.assertIn("below the minimum 1", str(self.error("[main]\nname = n\ncount = 0\n")))
        self.assertIn("above the maximum 1", str(self.error("[main]\nname = n\nratio = 2\n")))

    def test_other_bad_values(self) -> None:
        for option, value, words in [
            ("flag", "maybe", "not a boolean"),
            ("ip", "localhost", "not an IP address"),
            ("size", "big", "not a size"),
            ("kind", "c", "not one of a, b"),
            ("ratio", "nan", "not a finite number"),
            ("name", "", "must not be empty"),
        ]:
            err = self.error(f"[main]\nname = n\n{option} = {value}\n".replace("name = n\nname", "name"))
            self.assertIn(words, str(err))
            self.assertEqual(err.option, option)

    def test_unknown_option(self) -> None:
        err = self.error("[main]\nname = n\ncuont = 3\n")
        self.assertEqual(str(err), f"{self.dir / 't.conf'}: [main]: cuont: unknown option")

    def test_unknown_section(self) -> None:
        err = self.error("[main]\nname = n\n[mian]\n")
        self.assertIn("[mian]: unknown section", str(err))

    def test_pattern_options(self) -> None:
        self.assertEqual(self.error("[main]\nname=n\n[extra]\nother = 1\n").option, "other")
        self.assertEqual(self.error("[main]\nname=n\n[extra]\nitem_b = x\n").option, "item_b")

    def test_required(self) -> None:
        self.assertIn("[main]: required section is missing", str(self.error("[extra]\n")))
        self.assertIn("[main]: name: required option is missing", str(self.error("[main]\n")))

    def test_syntax_errors(self) -> None:
        self.assertIn("comes before any [section]", str(self.error("name = n\n")))
        self.assertIn("line 1: '[objectnode' is not a [section] header: the closing ] is missing",
                      str(self.error("[objectnode\nname = n\n")))
        self.assertIn("line 3 is not a [section] header: the closing ] is missing",
                      str(self.error("[a]\nname = n\n[b\nx = 1\n")))
        self.assertIn("option appears twice", str(self.error("[main]\nname = n\nname = m\n")))
        self.assertIn("section appears twice", str(self.error("[main]\nname = n\n[main]\n")))
        self.assertIn("cannot parse line", str(self.error("[main]\nname = n\njunk\n")))

    def test_not_text(self) -> None:
        path = self.dir / "bin.conf"
        path.write_bytes(b"\xff\xfe[main]\n")
        self.assertIn("not UTF-8", str(self.assertRaises(c.ConfigError, c.load_config, path, SCHEMA)))
        self.assertIn("is a directory", str(self.assertRaises(c.ConfigError, c.load_config, self.dir, SCHEMA)))

    def test_no_interpolation_and_case_kept(self) -> None:
        loaded = self.load("[main]\nname = %(x)s\n")
        self.assertEqual(loaded.section("main")["name"], "%(x)s")
        self.assertEqual(self.error("[main]\nname = n\nCount = 3\n").option, "Count")


class SizeTests(SynchronousTestCase):
    def test_units(self) -> None:
        base = Path(".")
        self.assertEqual(c.size("65536", base), 65536)
        self.assertEqual(c.size("64KiB", base), 65536)
        self.assertEqual(c.size("1MB", base), 10**6)
        self.assertEqual(c.size("2g", base), 2 * 10**9)
        self.assertEqual(c.size("1 GiB", base), 2**30)
