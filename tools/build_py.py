"""setuptools ``build_py`` that puts the server's data into the wheel.

The repository keeps ``templates/``, ``static/``, ``migrations/`` and ``alembic.ini`` at its
top level (the design card's layout). A wheel needs them inside the ``stcloud`` package, so
this hook copies them to ``stcloud/_data/`` in the build directory only; nothing is copied
into the source tree. ``stcloud.resources`` finds them in either place. An editable install
(``pip install -e``) skips the copy: it reads the checkout directly.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools.command.build_py import build_py as _build_py

DATA = ("templates", "static", "migrations", "alembic.ini")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


class build_py(_build_py):  # noqa: N801 - setuptools command naming
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent.parent
        target = Path(self.build_lib) / "stcloud" / "_data"
        for name in DATA:
            src = root / name
            if not src.exists():
                raise FileNotFoundError(f"{src} is missing: the wheel needs it")
            dst = target / name
            if src.is_dir():
                shutil.copytree(src, dst, ignore=IGNORE, dirs_exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
