"""Every CLI argument and job parameter is validated: a bad value is a one-line error naming it.

Arguments are enumerated from the real parser (a new typed option is covered automatically);
values that parse but make no sense are checked against a database with real episodes, so each
command gets as far as it would for a user. Job parameters are enumerated from the registry.
"""

from __future__ import annotations

import argparse
import json

import pytest
import sqlalchemy as sa

from app import cli
from app.db.engine import make_engine
from app.demo import candle_episodes as episodes
from app.errors import ValidationError
from app.jobs import queue, registry
from tests.security.support import (
    PLAIN_TYPES,
    error_line,
    leaves,
    required_args,
    run_cli,
)


def _typed_arguments():
    for path, parser in leaves(cli.build_parser()):
        for action in parser._actions:
            if action.type not in PLAIN_TYPES and action.nargs != 0:
                yield pytest.param(
                    path, parser, action, id=" ".join(path) + " " + (action.option_strings or [action.dest])[0]
                )


def _choice_arguments():
    for path, parser in leaves(cli.build_parser()):
        for action in parser._actions:
            if action.choices and not isinstance(action, argparse._SubParsersAction):
                yield pytest.param(
                    path, parser, action, id=" ".join(path) + " " + (action.option_strings or [action.dest])[0]
                )


def _names(action: argparse.Action) -> list[str]:
    return [*action.option_strings, action.dest, action.dest.replace("_", "-")]


def _with(parser, action, value) -> list[str]:
    given = [action.option_strings[0], value] if action.option_strings else [value]
    return [*required_args(parser, skip=action), *given]


@pytest.mark.parametrize("path,parser,action", list(_typed_arguments()))
def test_a_value_of_the_wrong_type_is_refused_naming_the_argument(path, parser, action):
    code, out, err, _ = run_cli(*path, *_with(parser, action, "not-a-number"))
    line = error_line(err)
    assert code == 2 and out == ""
    assert any(f"argument {n}" in line for n in _names(action)), line


@pytest.mark.parametrize("path,parser,action", list(_choice_arguments()))
def test_a_value_outside_the_choices_is_refused_naming_the_argument(path, parser, action):
    code, _, err, _ = run_cli(*path, *_with(parser, action, "bogus"))
    line = error_line(err)
    assert code == 2 and "invalid choice" in line and any(n in line for n in _names(action)), line


def test_every_typed_or_choice_argument_was_enumerated():
    # The two tests above must not silently cover nothing (e.g. after a parser refactor).
    assert len(list(_typed_arguments())) >= 30 and len(list(_choice_arguments())) >= 8


# Values that parse but are wrong: each must be refused with one line naming the argument
# (CLI flag or the parameter's name), before anything is trained or stored.
SEMANTIC = [
    (["train", "cnn", "--symbol", "BTC-PERP", "--epochs", "0"], "epochs"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--lr", "nan"], "lr"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--lr", "inf"], "lr"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--eval-fraction", "1.5"], "eval_fraction"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--min-profitability", "-0.1"], "min_profitability"),
    (["train", "cnn", "--symbol", " "], "symbol"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--device", "bogus"], "device"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--device", "cuda:7"], "device"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--model", "no_such_module:build"], "model"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--model", "app.nets.cnn"], "model"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--model", "app.nets.cnn:InputSpec"], "model"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--model-config", "[1, 2]"], "model_config"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--model-config", "{oops"], "model_config"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--model-config", '{"chanels": 8}'], "model_config"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--seed", "-1"], "seed"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--init", "sideways"], "init"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--init", "session:987654"], "init"),
    (["train", "cnn", "--symbol", "BTC-PERP", "--promote", "maybe"], "promote"),
    (["train", "rl", "--symbol", "BTC-PERP", "--init", "session:-1"], "init"),
    (["train", "rl", "--symbol", "BTC-PERP", "--eval-fraction", "0"], "eval_fraction"),
    (["train", "rl", "--symbol", "BTC-PERP", "--gamma", "2"], "gamma"),
    (["train", "rl", "--symbol", "BTC-PERP", "--device", "bogus"], "device"),
    (["train", "rl", "--symbol", "BTC-PERP", "--steps", "-5"], "steps"),
    (["train", "resume", "987654"], "session_id"),
    (["replay", "session", "987654"], "session"),
    (["replay", "session", "1", "--from-step", "-1"], "from_step"),
    (["replay", "session", "1", "--onto", "garbage"], "onto"),
    (["replay", "session", "1", "--device", "bogus"], "device"),
    (["replay", "session", "1", "--capture", "none"], "capture"),
    (["verify", "--session", "0"], "session_id"),
    (["jobs", "enqueue", "no_such_kind"], "kind"),
    (["jobs", "enqueue", "noop", "--param", "sleep_s"], "--param"),
    (["jobs", "enqueue", "noop", "--param", "sleep_s=soon"], "sleep_s"),
    (["jobs", "enqueue", "noop", "--param", "sleep_s=1", "--param", "sleep_s=2"], "sleep_s"),
    (["jobs", "enqueue", "noop", "--param", "bogus=1"], "bogus"),
    (["jobs", "enqueue", "noop", "--delay", "nan"], "delay_s"),
    (["jobs", "enqueue", "noop", "--delay", "-1"], "delay_s"),
    (["jobs", "enqueue", "noop", "--priority", "99999999999"], "priority"),
    (["jobs", "enqueue", "noop", "--dedupe-key", ""], "dedupe_key"),
    (["jobs", "enqueue", "noop", "--max-attempts", "0"], "--max-attempts"),
    (["jobs", "list", "--state", "bogus"], "state"),
    (["jobs", "list", "--limit", "0"], "--limit"),
    (["serve", "--max-jobs", "0"], "--max-jobs"),
    (["similar", "1", "-k", "0"], "k"),
    (["models", "list", "--limit", "0"], "--limit"),
    (["models", "list", "--symbol", ""], "--symbol"),
    (["models", "show", "987654"], "session"),
    (["models", "promote", "987654"], "session"),
    (["models", "rollback", "cnn", ""], "symbol"),
    (["models", "rollback", "cnn", "BTC-PERP", "--to", "x"], "--to"),
    (["models", "export", "987654", "--out", "/tmp/trainsrv-export-refused"], "session"),
    (["models", "export", "--deployed", "cnn", "NOPE", "--out", "/tmp/trainsrv-export-refused"], "deployed"),
    (["demo", "--days", "nan"], "--days"),
    (["demo", "--days", "inf"], "--days"),
    (["demo", "--every-min", "0"], "--every-min"),
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--candles", "/nonexistent/candles.csv"], "--candles"),
    (["validate", "--as-of", "yesterday"], "--as-of"),
    (["validate", "--symbol", ""], "--symbol"),
    (["events", "detect", "--symbol", ""], "--symbol"),
    (["events", "list", "--limit", "-1"], "--limit"),
    (["experiences", "build", "--symbol", " "], "--symbol"),
    (["ingest", "candles", "CANDLES", "--symbol", "", "--timeframe", "1m"], "symbol"),
    (["ingest", "candles", "CANDLES", "--symbol", "BTC-PERP", "--timeframe", "7q"], "timeframe"),
    (["ingest", "candles", "/nonexistent/candles.csv", "--symbol", "BTC-PERP", "--timeframe", "1m"], "candle file"),
    (["db", "upgrade", "no_such_revision"], "no_such_revision"),
    (["sql", "-c", " "], "-c"),
]


@pytest.fixture(scope="module")
def trained_db(module_db_url, real_candles_path):
    """A database with real episodes and one short session (so training options are reached)."""
    engine = make_engine(module_db_url)
    episodes.build_episodes(engine, real_candles_path, minutes=300)
    engine.dispose()
    return module_db_url


def _snapshot(url: str) -> tuple:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM training_sessions), "
                    "(SELECT count(*) FROM candles), (SELECT count(*) FROM market_events)"
                )
            ).one()
    finally:
        engine.dispose()


@pytest.mark.parametrize("argv,named", SEMANTIC, ids=[" ".join(a)[:70] for a, _ in SEMANTIC])
def test_a_senseless_value_is_refused_naming_the_argument(
    argv, named, trained_db, monkeypatch, tmp_path, real_candles_path
):
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", trained_db)
    argv = [str(real_candles_path) if a == "CANDLES" else a for a in argv]
    before = _snapshot(trained_db)
    code, out, err, _ = run_cli(*argv)
    line = error_line(err)
    assert code in (1, 2), (code, out)
    assert named in line, line
    assert _snapshot(trained_db) == before  # refused before anything was stored


def test_every_command_with_arguments_has_a_refusal_case():
    tested = {tuple(argv[:2]) for argv, _ in SEMANTIC} | {tuple(argv[:1]) for argv, _ in SEMANTIC}
    untested = []
    for path, parser in leaves(cli.build_parser()):
        own = [a for a in parser._actions if a.dest not in ("help", "json") and a.nargs != 0]
        typed = any(a.type not in PLAIN_TYPES or a.choices for a in own)
        if own and not typed and path not in tested and path[:1] not in tested:
            untested.append(" ".join(path))
    assert not untested, f"commands whose free-text arguments no test misuses: {untested}"


# -- job parameters ---------------------------------------------------------------------------


def _bad_values(param: registry.Param) -> list:
    if param.choices:
        return ["bogus", 7]
    if param.type is bool:
        return ["maybe", 2, [True]]
    if param.type is str:
        return ["", 12, ["a"], {"a": 1}, "a\x00b"]
    bad = ["abc", [1], {"x": 1}, True]
    if param.type is int:
        bad.append(1.5)
    if param.type is float:
        bad += [float("nan"), "inf", "-inf"]
    if param.min is not None:
        bad.append(param.min - 1)
    if param.max is not None:
        bad.append(param.max + 1)
    return bad


def _job_param_cases():
    for kind, handler in sorted(registry.load_handlers().items()):
        required = {
            n: {int: 1, float: 0.5, str: "BTC-PERP", bool: True}[p.type]
            for n, p in handler.params.items()
            if p.default is registry.REQUIRED
        }
        for name, param in handler.params.items():
            for value in _bad_values(param):
                yield pytest.param(kind, {**required, name: value}, name, id=f"{kind}.{name}={value!r}")
        yield pytest.param(kind, {**required, "no_such_param": 1}, "no_such_param", id=f"{kind}.unknown")


@pytest.mark.parametrize("kind,params,field", list(_job_param_cases()))
def test_a_bad_job_parameter_is_refused_naming_it(kind, params, field):
    with pytest.raises(ValidationError) as err:
        queue.validate(kind, params)
    assert err.value.field == field
    assert "\n" not in str(err.value)


def test_a_bad_job_parameter_is_refused_before_anything_is_queued(engine):
    with engine.begin() as conn:
        with pytest.raises(ValidationError, match="epochs"):
            queue.enqueue(conn, "train_cnn", {"symbol": "BTC-PERP", "epochs": json.loads("-1")})
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 0
