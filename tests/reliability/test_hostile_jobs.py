"""Hostile job parameters at both doors of the queue (hypothesis).

* ``queue.enqueue`` (behind ``trainsrv jobs enqueue``): every call queues a job whose stored
  parameters are the validated ones, or raises ``ValidationError`` naming the field — nothing else.
* Rows written with plain SQL skip that check (as ops may do): the trainer validates again, so
  every such job ends ``succeeded`` or ``failed`` with a one-line reason, and the trainer keeps
  working through all of them.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import config
from app.errors import ValidationError
from app.jobs import queue, registry
from app.jobs.worker import Worker

TRIED: dict[str, int] = {}
# The product's kinds: the job tests' own handlers (test_*) may be registered too, and some of them do
# what their parameters say for as long as they say (test_watch with seconds=2**40 never ends).
KINDS = sorted(kind for kind in registry.load_handlers() if not kind.startswith("test_"))
# Small numbers only where a value may be valid: a noop must not sleep for long.
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([-1, 0, 1, 2**40, -(2**63), 0.01, 1.5, 1e308, -0.0]),
    st.sampled_from(
        [
            "",
            " ",
            "abc",
            "0.01",
            "-1",
            "nan",
            "inf",
            "cpu",
            "bogus",
            "app.nets.cnn:build",
            "os:getcwd",
            "1; DROP TABLE jobs",
            "BTC-PERP",
            "full",
            "Δσ",
            "\u0000",
            "x" * 2000,
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def jobs(draw, unknown_kinds: bool = True):
    kind = draw(st.sampled_from(KINDS + (["no_such_kind", ""] if unknown_kinds else [])))
    names = sorted(registry.load_handlers()[kind].params) if kind in KINDS else []
    keys = draw(st.lists(st.sampled_from(names + ["bogus", "__proto__"]), max_size=4, unique=True))
    return kind, {k: draw(VALUES) for k in keys}


def _count(what: str) -> None:
    TRIED[what] = TRIED.get(what, 0) + 1


def test_enqueue_accepts_validated_params_or_names_the_field(engine):
    created = []

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        job=jobs(),
        priority=st.sampled_from([0, 5, -3, 2**31, True]),
        delay=st.sampled_from([0.0, 1.5, -1.0, float("nan"), float("inf")]),
        dedupe=st.sampled_from([None, None, "", " ", "nightly", "a\u0000b"]),
    )
    def run(job, priority, delay, dedupe):
        _count("job parameter sets (enqueue)")
        kind, params = job
        try:
            with engine.begin() as conn:
                enqueued = queue.enqueue(conn, kind, params, priority=priority, delay_s=delay, dedupe_key=dedupe)
        except ValidationError as exc:
            assert exc.field
            return
        if enqueued.created:
            created.append((enqueued.id, registry.get(kind).validate(params)))

    run()
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT id, params FROM jobs")).all())
    assert stored == {job_id: json.loads(json.dumps(clean)) for job_id, clean in created}


def test_the_trainer_refuses_bad_params_that_skipped_enqueue(engine, db_url, monkeypatch):
    monkeypatch.setenv("TRAINSRV_POLL_INTERVAL_S", "0.05")
    monkeypatch.setenv("TRAINSRV_ENABLE_BACKGROUND_VALIDATION", "false")
    config.set_settings(None)
    inserted: list[int] = []

    @settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(batch=st.lists(jobs(unknown_kinds=False), min_size=30, max_size=30))
    def run(batch):
        with engine.begin() as conn:
            for kind, params in batch:
                try:
                    text = json.dumps(params, allow_nan=False)
                except ValueError:
                    continue
                if "\\u0000" in text:  # jsonb cannot hold it: the INSERT itself is refused by PostgreSQL
                    continue
                _count("job rows written with plain SQL (run by the trainer)")
                inserted.append(
                    conn.execute(
                        sa.text(
                            "INSERT INTO jobs (kind, params, max_attempts) VALUES (:k, CAST(:p AS jsonb), 1) RETURNING id"
                        ),
                        {"k": kind, "p": text},
                    ).scalar_one()
                )
        Worker(engine, config.get_settings(), schedule=False).run(once=True)

    run()
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, kind, params, state, last_error FROM jobs")).all()
    assert sorted(r.id for r in rows) == sorted(inserted)
    for r in rows:
        assert r.state in ("succeeded", "failed"), r
        if r.state == "failed":
            assert r.last_error and r.last_error.splitlines()[0], r
        else:
            registry.get(r.kind).validate(r.params)  # only valid parameters ever ran to success
