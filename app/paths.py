"""Where the project's non-Python assets live (SQL files, migrations).

trainsrv is installed from its checkout (editable install), so assets are found relative to
the package rather than copied into site-packages.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = REPO_ROOT / "sql"
MIGRATIONS_DIR = REPO_ROOT / "migrations"
ALEMBIC_INI = REPO_ROOT / "alembic.ini"
