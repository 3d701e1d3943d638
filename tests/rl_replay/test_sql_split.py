"""The RL replay functions split by concern (migration 0016) define exactly what rl_replay_index v0003 did,
and head runs the newest file of each group."""

import re

import sqlalchemy as sa

from app.db import views

GROUPS = ("rl_replay_slots", "rl_replay_draw", "rl_replay_write_back")
_FUNCTION = re.compile(r"^CREATE OR REPLACE FUNCTION (\w+)\(.*?^(?:\$\$;|RETURN .*?;)$", re.M | re.S)
_DEFINITIONS = sa.text(
    "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p WHERE p.proname LIKE 'rl\\_replay\\_%'"
)


def _functions(text: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in _FUNCTION.finditer(text)}


def _newest(group: str) -> int:
    return max(int(p.stem[1:]) for p in views.path(group, 1, "functions").parent.glob("v*.sql"))


def test_the_split_files_hold_every_function_of_v0003_unchanged():
    whole = _functions(views.read("rl_replay_index", 3, "functions"))
    split: dict[str, str] = {}
    for group in GROUPS:
        parts = _functions(views.read(group, 1, "functions"))
        assert not set(parts) & set(split), f"{group} repeats a function"
        split.update(parts)
    assert len(whole) == 24 and split == whole


def test_head_runs_the_newest_file_of_each_group(engine):
    with engine.connect() as conn:
        at_head = dict(conn.execute(_DEFINITIONS).all())
        for group in GROUPS:
            conn.execute(sa.text(views.read(group, _newest(group), "functions")))
        from_files = dict(conn.execute(_DEFINITIONS).all())
        conn.rollback()
    assert len(at_head) >= 24 and from_files == at_head
