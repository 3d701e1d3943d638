"""Hostile packages and predictions at the orchestrator's entry points (hypothesis).

Both doors are tried: the plain-SQL functions any language calls (``ingest_package`` /
``ingest_prediction`` with a raw JSON document) and the Python ``Client``. Every case must end in
success or a clear error — a refusal naming the field (SQLSTATE 22023 with the field in COLUMN,
``ValidationError`` in Python), or, for text that is not JSON at all, PostgreSQL's own input
error — and afterwards the database is checked: one row per accepted hash or key, every payload
still matching its hash and decodable, verdicts consistent with their flags.

Each test counts its examples into ``TRIED`` (reported in docs/reliability.md).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.client import Client, Prediction
from app.errors import ValidationError
from app.ingest import package as ingest_package
from app.ingest.builder import package_from_candles
from app.ingest.candles import ingest_candles

TRIED: dict[str, int] = {}
UTC = dt.UTC
FAST = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

# -- what hostile values look like --------------------------------------------------------------

WEIRD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "abc",
        "50",
        "\u0000",
        "\ud7ff",
        "Δσ",
        "'; DROP TABLE input_packages; --",
        "x" * 300,
        "2022-01-01",
        "null",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    WEIRD_TEXT,
    st.text(max_size=20),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def mutated(draw, base: dict) -> dict:
    """A valid package document with one to three hostile edits."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["drop", "replace", "add", "bar", "row", "ts", "array", "symbol"]))
        if edit == "drop" and doc:
            doc.pop(draw(st.sampled_from(sorted(doc))))
        elif edit == "replace" and doc:
            doc[draw(st.sampled_from(sorted(doc)))] = draw(JSON)
        elif edit == "add":
            doc[draw(st.text(min_size=1, max_size=10))] = draw(JSON)
        elif edit in ("bar", "row") and isinstance(doc.get("ohlcv"), dict) and doc["ohlcv"]:
            window = doc["ohlcv"][draw(st.sampled_from(sorted(doc["ohlcv"])))]
            bars = window.get("bars") if isinstance(window, dict) else None
            if isinstance(bars, list) and bars and isinstance(bars[0], list):
                i = draw(st.integers(0, len(bars) - 1))
                if edit == "bar" and isinstance(bars[i], list) and bars[i]:
                    bars[i][draw(st.integers(0, len(bars[i]) - 1))] = draw(SCALARS)
                elif edit == "row":
                    bars[i] = draw(st.lists(SCALARS, max_size=7))
        elif edit == "ts":
            doc["ts"] = draw(
                st.one_of(
                    WEIRD_TEXT,
                    st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat()),
                    st.datetimes().map(lambda t: t.isoformat()),
                    SCALARS,
                )
            )
        elif edit == "array" and isinstance(doc.get("features"), dict) and doc["features"]:
            doc["features"][draw(st.sampled_from(sorted(doc["features"])))] = draw(JSON)
        elif edit == "symbol":
            doc["symbol"] = draw(st.one_of(WEIRD_TEXT, st.text(max_size=40), SCALARS))
    return doc


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(module_db_url, real_candles_path):
    """A valid real package (built from the stored real candles) and the module's database."""
    engine = sa.create_engine(module_db_url)
    ingest_candles(engine, real_candles_path, "BTC-PERP", "1m", progress=False)
    with engine.connect() as conn:
        pkg = package_from_candles(conn, "BTC-PERP", dt.datetime(2022, 1, 10, 12, tzinfo=UTC))
    engine.dispose()
    return module_db_url, pkg


@pytest.fixture(scope="module")
def pg(base):
    """The orchestrator's raw SQL connection (autocommit: each call is its own transaction)."""
    url = sa.engine.make_url(base[0]).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def _sql_call(pg, sql: str, text: str):
    """Run an ingest function on raw JSON text: (row or None, refusal or None)."""
    try:
        return pg.execute(sql, (text,)).fetchone(), None
    except psycopg.errors.InvalidParameterValue as exc:
        assert exc.diag.column_name, f"refused without naming the field: {exc}"
        return None, exc
    except (psycopg.errors.InvalidTextRepresentation, psycopg.errors.UntranslatableCharacter) as exc:
        # The caller's text is not JSON that PostgreSQL accepts: refused by the jsonb cast itself.
        assert "json" in str(exc).lower() or "unicode" in str(exc).lower(), exc
        return None, exc
    except psycopg.DataError as exc:
        # A NUL byte in the text itself: the driver refuses to send it (PostgreSQL text cannot hold it).
        assert "NUL" in str(exc), exc
        return None, exc


def _consistent(url: str) -> dict:
    """Database-wide invariants of the ingest tables; returns the counts."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        bad_hash = conn.execute(
            sa.text("SELECT count(*) FROM input_packages WHERE sha256(payload) <> data_hash")
        ).scalar()
        wrong_verdict = conn.execute(
            sa.text(
                "SELECT count(*) FROM input_packages WHERE is_valid IS DISTINCT FROM NOT EXISTS "
                "(SELECT 1 FROM jsonb_each(validation_flags) f WHERE f.value = 'false'::jsonb) "
                "OR (NOT is_valid AND embedding IS NOT NULL)"
            )
        ).scalar()
        rows = conn.execute(sa.text("SELECT id, payload, data_hash FROM input_packages")).all()
        counts = dict(
            conn.execute(
                sa.text(
                    "SELECT 'packages', count(*) FROM input_packages UNION ALL "
                    "SELECT 'predictions', count(*) FROM predictions"
                )
            ).all()
        )
        counts["hashes"] = {bytes(h) for h in conn.execute(sa.text("SELECT data_hash FROM input_packages")).scalars()}
    engine.dispose()
    assert bad_hash == 0 and wrong_verdict == 0
    for row in rows:  # every stored payload still decodes into a package
        ingest_package.decode_payload(bytes(row.payload), bytes(row.data_hash), row.id)
    return counts


def _count(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


# -- packages --------------------------------------------------------------------------------------


def test_hostile_package_documents_through_sql(base, pg):
    url, pkg = base
    accepted: set[bytes] = set()
    before = _consistent(url)["hashes"]

    @FAST
    @given(doc=mutated(pkg.to_document()))
    def run(doc):
        _count("package documents (SQL)")
        row, _ = _sql_call(pg, "SELECT data_hash FROM ingest_package(%s::jsonb)", json.dumps(doc))
        if row is not None:
            accepted.add(bytes(row[0]))

    run()
    assert _consistent(url)["packages"] == len(before | accepted)  # one row per accepted hash, nothing else


@pytest.mark.parametrize("symbol", ["", " ", "\u00a0"])
def test_a_blank_symbol_is_refused_by_sql(base, db_url, symbol):
    _, pkg = base
    url = sa.engine.make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as own:  # its own database: a stored one would poison the others
        _, refusal = _sql_call(
            own, "SELECT data_hash FROM ingest_package(%s::jsonb)", json.dumps({**pkg.to_document(), "symbol": symbol})
        )
    assert refusal is not None and refusal.diag.column_name == "symbol"


def test_text_that_is_not_json_is_refused_by_sql(base, pg):
    url, _ = base
    before = _consistent(url)

    @FAST
    @given(text=st.one_of(st.text(max_size=60), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
    def run(text):
        _count("raw texts (SQL)")
        row, _ = _sql_call(pg, "SELECT data_hash FROM ingest_package(%s::jsonb)", text)
        assert row is None or text.strip().startswith("{")

    run()
    assert _consistent(url) == before


ARRAYS = st.one_of(
    st.lists(st.floats(width=64), min_size=0, max_size=8),
    st.lists(st.lists(st.floats(allow_nan=True), min_size=5, max_size=5), min_size=1, max_size=5),
    st.just([[1.0, 2.0], [3.0]]),
    st.just("abc"),
    st.just([["x"] * 5]),
)


@st.composite
def packages(draw, pkg: ingest_package.ModelInputPackage):
    """Keyword arguments for ModelInputPackage: the real package's, with hostile fields."""
    kwargs = {
        "symbol": pkg.symbol,
        "ts": pkg.ts,
        "ohlcv": dict(pkg.ohlcv),
        "bar_ts": dict(pkg.bar_ts),
        "features": dict(pkg.features),
        "windows": dict(pkg.windows),
        "metadata": {"source": "test"},
    }
    field = draw(
        st.sampled_from(
            ["symbol", "ts", "ohlcv", "features", "orderbook", "hidden_state", "metadata", "windows", "bar_ts"]
        )
    )
    if field == "symbol":
        kwargs["symbol"] = draw(st.one_of(WEIRD_TEXT, st.text(max_size=30), st.integers()))
    elif field == "ts":
        kwargs["ts"] = draw(st.one_of(st.datetimes(timezones=st.just(UTC)), st.datetimes(), WEIRD_TEXT))
    elif field in ("ohlcv", "bar_ts", "windows"):
        tf = draw(st.sampled_from(sorted(pkg.ohlcv) + ["7q", "", "1m "]))
        value = {
            "ohlcv": ARRAYS,
            "bar_ts": st.lists(st.integers(-(2**62), 2**62), max_size=70),
            "windows": st.one_of(st.integers(-5, 500), WEIRD_TEXT),
        }[field]
        kwargs[field] = {**kwargs[field], tf: draw(value)}
    elif field == "features":
        kwargs["features"] = {**kwargs["features"], draw(st.text(max_size=12)): draw(ARRAYS)}
    elif field in ("orderbook", "hidden_state"):
        kwargs[field] = draw(ARRAYS)
    else:
        kwargs["metadata"] = draw(st.one_of(st.dictionaries(st.text(max_size=8), JSON, max_size=4), JSON))
    return kwargs


def test_hostile_packages_through_the_client(base):
    url, pkg = base
    accepted: set[bytes] = set()
    before = _consistent(url)["hashes"]
    client = Client(url)

    @FAST
    @given(kwargs=packages(pkg))
    def run(kwargs):
        _count("packages (Client)")
        try:
            candidate = ingest_package.ModelInputPackage(**kwargs)
            accepted.add(client.insert_package(candidate).data_hash)
        except ValidationError as exc:
            assert exc.field  # names what is wrong (the name may echo the caller's own text)

    run()
    client.close()
    assert _consistent(url)["packages"] == len(before | accepted)


# -- predictions -----------------------------------------------------------------------------------

NUMBERS = st.one_of(st.floats(), st.integers(-(2**65), 2**65), WEIRD_TEXT, st.none(), st.booleans())


@st.composite
def prediction_docs(draw, package_hash: str):
    doc = {
        "package_hash": package_hash,
        "model_kind": "cnn",
        "model_version": "v1",
        "action": "long",
        "confidence": 0.5,
        "horizon_s": 300,
    }
    for _ in range(draw(st.integers(1, 3))):
        field = draw(
            st.sampled_from(
                [
                    "model_kind",
                    "model_version",
                    "action",
                    "confidence",
                    "horizon_s",
                    "predicted_move",
                    "predicted_pivot",
                    "predicted_at",
                    "prediction_key",
                    "package_hash",
                    "package_id",
                    "extra",
                ]
            )
        )
        if field in ("model_kind", "action", "model_version", "prediction_key", "package_hash"):
            doc[field] = draw(
                st.one_of(
                    WEIRD_TEXT,
                    st.sampled_from(["cnn", "rl", "other", "long", "short", "hold"]),
                    st.text(max_size=20),
                    NUMBERS,
                )
            )
        elif field == "predicted_at":
            doc[field] = draw(
                st.one_of(
                    st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat()),
                    st.datetimes().map(lambda t: t.isoformat()),
                    WEIRD_TEXT,
                    NUMBERS,
                )
            )
        elif field == "extra":
            doc[draw(st.text(min_size=1, max_size=8))] = draw(JSON)
        else:
            doc[field] = draw(NUMBERS)
    return doc


def test_hostile_predictions_through_sql(base, pg):
    url, pkg = base
    with Client(url) as client:
        client.insert_package(pkg)
    keys: set[int] = set()
    before = _consistent(url)["predictions"]

    @FAST
    @given(doc=prediction_docs(pkg.data_hash.hex()))
    def run(doc):
        _count("prediction documents (SQL)")
        row, _ = _sql_call(pg, "SELECT prediction_id FROM ingest_prediction(%s::jsonb)", json.dumps(doc))
        if row is not None:
            keys.add(row[0])

    run()
    assert _consistent(url)["predictions"] == before + len(keys)


def test_hostile_predictions_through_the_client(base):
    url, pkg = base
    client = Client(url)
    package_id = client.insert_package(pkg).package_id
    ids: set[int] = set()
    before = _consistent(url)["predictions"]
    times = st.one_of(st.none(), st.datetimes(timezones=st.just(UTC)), st.datetimes(), st.just(pkg.ts))

    @FAST
    @given(
        kind=st.one_of(st.sampled_from(["cnn", "rl", "other"]), WEIRD_TEXT),
        action=st.one_of(st.sampled_from(["long", "short", "hold"]), WEIRD_TEXT),
        confidence=st.one_of(st.floats(), st.integers(-3, 3)),
        horizon=st.one_of(st.integers(-(2**64), 2**64), st.floats()),
        move=st.one_of(st.none(), st.floats()),
        at=times,
        key=st.one_of(st.none(), WEIRD_TEXT, st.text(max_size=9)),
    )
    def run(kind, action, confidence, horizon, move, at, key):
        _count("predictions (Client)")
        try:
            ids.add(
                client.insert_prediction(
                    Prediction(
                        kind,
                        "v1",
                        action,
                        confidence,
                        horizon,
                        predicted_move=move,
                        predicted_at=at,
                        prediction_key=key,
                    ),
                    package_id,
                )
            )
        except ValidationError as exc:
            assert exc.field  # names what is wrong (the name may echo the caller's own text)
        else:
            assert 0 <= confidence <= 1 and not (isinstance(horizon, float) and math.isnan(horizon))

    run()
    client.close()
    assert _consistent(url)["predictions"] == before + len(ids)
