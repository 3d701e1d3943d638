"""Run the ``trainsrv`` command as a user would: a subprocess with its own environment."""

import os
import subprocess
import sys


def clean_env() -> dict:
    """This process's environment without trainsrv's own settings, with a UTF-8 locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSRV_")}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def run(*args: str, env: dict | None = None, timeout: float = 600, check: bool = False):
    full_env = clean_env()
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"trainsrv {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result
