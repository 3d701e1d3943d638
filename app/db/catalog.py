"""What every view and column means, from one source: ``sql/views/catalog.toml``.

The same file gives the database its ``COMMENT ON VIEW`` / ``COMMENT ON COLUMN`` (so ``\\d+`` in psql
and Grafana show the meanings) and docs/analysts.md its view sections, so the two cannot disagree.
``apply`` runs whenever a migration creates a view (``app.db.views.create``) and in migration 0012 for
every view; it comments only the columns a view has at that revision. Regenerate the docs with
``python -m app.db.catalog --write``; ``tests/analysts/test_catalog.py`` fails when a view column has
no comment or the docs differ from the source.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import tomllib

import sqlalchemy as sa
from psycopg import sql

from app.paths import REPO_ROOT, SQL_DIR

SOURCE = SQL_DIR / "views" / "catalog.toml"
DOC = REPO_ROOT / "docs" / "analysts.md"
BEGIN, END = "<!-- views: generated from sql/views/catalog.toml -->", "<!-- end of generated views -->"
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")

VIEW_COLUMNS = sa.text("""
    SELECT c.relname AS view, a.attname AS column, col_description(c.oid, a.attnum) AS comment
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
    WHERE c.relkind = 'v' AND c.relnamespace = current_schema()::regnamespace
      AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY c.relname, a.attnum""")
VIEW_COMMENTS = sa.text("""
    SELECT c.relname AS view, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c
    WHERE c.relkind = 'v' AND c.relnamespace = current_schema()::regnamespace""")


@functools.cache
def load() -> dict[str, dict]:
    """Every view in the source: ``{name: {"title", "about", "analyst", "columns": {column: meaning}}}``."""
    data = tomllib.loads(SOURCE.read_text())
    for name, entry in data.items():
        names = [name, *entry.get("columns", {})]
        bad = [n for n in names if not IDENTIFIER.match(n)]
        if bad or not entry.get("title") or not entry.get("about"):
            raise ValueError(f"{SOURCE}: view {name!r} needs a title, an about text and plain identifiers ({bad})")
    return data


def view_comment(name: str) -> str:
    """The view's COMMENT: its title and the first paragraph of its description, on one line."""
    entry = load()[name]
    first = entry["about"].strip().split("\n\n")[0]
    return f"{name} — {entry['title']}. {' '.join(first.split())}"


def apply(conn: sa.Connection, names: list[str] | None = None) -> int:
    """Comment the views ``names`` (default: every view in the source) and those of their columns that
    exist now; views not in the database are skipped. Returns the number of comments written."""
    existing: dict[str, set[str]] = {}
    for row in conn.execute(VIEW_COLUMNS):
        existing.setdefault(row.view, set()).add(row.column)
    catalog = load()
    written = 0
    with conn.connection.cursor() as cur:
        for name in names if names is not None else list(catalog):
            if name not in existing or name not in catalog:
                continue
            cur.execute(
                sql.SQL("COMMENT ON VIEW {} IS {}").format(sql.Identifier(name), sql.Literal(view_comment(name)))
            )
            for column, meaning in catalog[name].get("columns", {}).items():
                if column in existing[name]:
                    cur.execute(
                        sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                            sql.Identifier(name), sql.Identifier(column), sql.Literal(meaning)
                        )
                    )
                    written += 1
            written += 1
    return written


def remove(conn: sa.Connection) -> None:
    """Drop every view and view-column comment (migration 0012's downgrade)."""
    with conn.connection.cursor() as cur:
        for row in conn.execute(VIEW_COLUMNS).all():
            cur.execute(
                sql.SQL("COMMENT ON COLUMN {}.{} IS NULL").format(sql.Identifier(row.view), sql.Identifier(row.column))
            )
        for row in conn.execute(VIEW_COMMENTS).all():
            cur.execute(sql.SQL("COMMENT ON VIEW {} IS NULL").format(sql.Identifier(row.view)))


def problems(conn: sa.Connection) -> list[str]:
    """Views and view columns in the database whose comment is missing or differs from the source."""
    catalog = load()
    found = []
    for row in conn.execute(VIEW_COMMENTS):
        if row.view not in catalog:
            found.append(f"view {row.view} is not described in {SOURCE.name}")
        elif row.comment != view_comment(row.view):
            found.append(f"view {row.view}: comment differs from {SOURCE.name}")
    for row in conn.execute(VIEW_COLUMNS):
        meaning = catalog.get(row.view, {}).get("columns", {}).get(row.column)
        if meaning is None:
            found.append(f"column {row.view}.{row.column} has no line in {SOURCE.name}")
        elif row.comment != meaning:
            found.append(f"column {row.view}.{row.column}: comment differs from {SOURCE.name}")
    return found


def markdown() -> str:
    """The view sections of docs/analysts.md: the analysts' views, then the internal ones."""
    catalog = load()
    analyst = [n for n, e in catalog.items() if e.get("analyst")]
    internal = [n for n, e in catalog.items() if not e.get("analyst")]
    parts = [_section(name, catalog[name]) for name in analyst]
    listed = "\n".join(
        f"- `{n}` — {catalog[n]['title'].removesuffix(' (internal)')}: {' '.join(catalog[n]['about'].split())}"
        for n in internal
    )
    parts.append(
        "## Internal views\nThe replay's building blocks, which the views above read; their columns may "
        f"change with the replay's implementation.\n\n{listed}"
    )
    return "\n\n".join(parts) + "\n"


def _section(name: str, entry: dict) -> str:
    rows = "\n".join(f"| {column} | {meaning} |" for column, meaning in entry["columns"].items())
    return f"## {name} — {entry['title']}\n{entry['about'].strip()}\n\n| column | meaning |\n| --- | --- |\n{rows}"


def render_doc(text: str) -> str:
    """``text`` (docs/analysts.md) with its generated block replaced by the source's current rendering."""
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + markdown() + text[stop:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"regenerate the view sections of {DOC.name} from {SOURCE.name}")
    parser.add_argument("--write", action="store_true", help="rewrite the doc (default: exit 1 if it is stale)")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    wanted = render_doc(current)
    if args.write:
        DOC.write_text(wanted)
        return 0
    if current != wanted:
        print(f"{DOC} is stale: run python -m app.db.catalog --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
