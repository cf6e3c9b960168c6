"""Where the server's templates, static files, migrations and ``alembic.ini`` are.

Installed from a wheel or sdist, they sit inside the package (``stcloud/_data/``, put there
by ``tools/build_py.py``). In a source checkout (``pip install -e``) they stay at the top of
the repository. Nothing else in stcloud builds these paths.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_PACKAGED = PACKAGE_DIR / "_data"
DATA_DIR = _PACKAGED if _PACKAGED.is_dir() else PACKAGE_DIR.parent

TEMPLATES = DATA_DIR / "templates"
STATIC = DATA_DIR / "static"
MIGRATIONS = DATA_DIR / "migrations"
ALEMBIC_INI = DATA_DIR / "alembic.ini"
