"""
A normal (non-editable) ``pip install .`` makes ``twistd proxy`` and ``twistd objectnode``
available. The install goes into a fresh virtualenv that borrows this environment's
dependencies through a .pth line (so the test needs no network), from a copy of the source.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import txstore

SOURCE = Path(txstore.__file__).resolve().parent.parent


class NormalInstallTests(SynchronousTestCase):
    def test_pip_install_makes_plugins_available(self) -> None:
        work = Path(self.mktemp()).absolute()
        source = work / "src"
        ignore = shutil.ignore_patterns("__pycache__", "_trial_temp*", "*.pyc", "dropin.cache")
        for name in ("setup.py", "README.rst"):
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(SOURCE / name, source / name)
        for package in ("txstore", "twisted"):
            shutil.copytree(SOURCE / package, source / package, ignore=ignore)
        env_dir = work / "venv"
        # trial -j hands its workers its sys.path as PYTHONPATH: the checkout would shadow the install
        clean_env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120, env=clean_env)
        python = env_dir / "bin" / "python"
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True, timeout=60, env=clean_env,
        ).stdout.strip()
        borrowed = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
        (Path(purelib) / "borrowed.pth").write_text("\n".join(sorted(borrowed)) + "\n")

        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(source)],
            capture_output=True, text=True, timeout=300, cwd=str(work), env=clean_env,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

        installed = Path(purelib)
        self.assertTrue((installed / "twisted" / "plugins" / "txstore_plugins.py").exists())
        self.assertFalse((installed / "twisted" / "plugins" / "__init__.py").exists())
        for script in ("txstore-aio", "txstore-ring", "txstore-recon", "txstore-object-info"):
            self.assertTrue((env_dir / "bin" / script).exists(), script)

        where = subprocess.run(
            [str(python), "-c", "import txstore; print(txstore.__file__)"],
            check=True, capture_output=True, text=True, timeout=60, cwd="/", env=clean_env,
        ).stdout.strip()
        self.assertTrue(where.startswith(purelib), where)

        packages = sorted(str(p.parent.relative_to(SOURCE)) for p in (SOURCE / "txstore").rglob("__init__.py"))
        installed_packages = sorted(
            str(p.parent.relative_to(installed)) for p in (installed / "txstore").rglob("__init__.py")
        )
        self.assertEqual(installed_packages, packages)

        shutil.rmtree(source)  # the installed copy must stand alone
        listing = subprocess.run(
            [str(python), "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()", "--help"],
            capture_output=True, text=True, timeout=120, cwd="/", env=clean_env,
        )
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertRegex(listing.stdout, r"\n\s+proxy\s")
        self.assertRegex(listing.stdout, r"\n\s+objectnode\s")
