"""Prometheus metrics and a health endpoint for ``trainsrv serve --metrics-port`` (stdlib http.server).

In-process counters are fed by the code that does the work: the job transitions (job durations, by kind
and outcome), the session recorder (training steps), the gradient writer (bytes written). Figures the
database knows (queue depth by state and kind, validation lag) are read when Prometheus scrapes, from
named queries in ``sql/queries/metrics.sql``. ``/health`` answers 200 while the database answers,
503 otherwise. The server listens on 127.0.0.1 unless told otherwise (``--metrics-host``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, float("inf"))
_lock = threading.Lock()
_counters: dict[tuple[str, tuple], float] = {}
_histograms: dict[tuple[str, tuple], list[float]] = {}  # bucket counts..., sum, count
_job_started: dict[int, float] = {}
_steps_window: list[tuple[float, int]] = []  # (monotonic time, total steps) for steps/s
HELP = {
    "trainsrv_jobs_finished_total": ("counter", "jobs this process finished, by kind and outcome"),
    "trainsrv_job_duration_seconds": ("histogram", "wall time of the jobs this process ran, by kind and outcome"),
    "trainsrv_training_steps_total": ("counter", "training steps recorded by this process"),
    "trainsrv_training_steps_per_second": ("gauge", "training steps per second over the last minute"),
    "trainsrv_gradient_bytes_written_total": ("counter", "gradient bytes this process wrote to gradient_blobs"),
    "trainsrv_jobs": ("gauge", "jobs in the queue, by state and kind"),
    "trainsrv_validation_lag_seconds": ("gauge", "age of the oldest prediction due for validation and not validated"),
    "trainsrv_up": ("gauge", "1 when the database answered this scrape"),
}


def inc(name: str, value: float = 1.0, **labels: str) -> None:
    key = (name, tuple(sorted(labels.items())))
    with _lock:
        _counters[key] = _counters.get(key, 0.0) + value


def observe(name: str, value: float, **labels: str) -> None:
    key = (name, tuple(sorted(labels.items())))
    with _lock:
        h = _histograms.setdefault(key, [0.0] * (len(DURATION_BUCKETS) + 2))
        for i, bound in enumerate(DURATION_BUCKETS):
            if value <= bound:
                h[i] += 1
        h[-2] += value
        h[-1] += 1


def on_event(event: str, fields: dict) -> None:
    """Job transitions (app.jobs.transitions.emit) -> job counters and durations."""
    job_id = fields.get("job_id")
    if event == "job.started" and job_id is not None:
        _job_started[job_id] = time.monotonic()
        return
    outcome = {
        "job.succeeded": "succeeded",
        "job.failed": "failed",
        "job.retry_scheduled": "retry",
        "job.released": "released",
        "job.lost": "lost",
        "job.abandoned": "abandoned",
    }.get(event)
    if outcome is None or job_id is None:
        return
    kind = str(fields.get("kind", ""))
    inc("trainsrv_jobs_finished_total", kind=kind, outcome=outcome)
    started = _job_started.pop(job_id, None)
    if started is not None:
        observe("trainsrv_job_duration_seconds", time.monotonic() - started, kind=kind, outcome=outcome)


def training_step() -> None:
    now = time.monotonic()
    with _lock:
        key = ("trainsrv_training_steps_total", ())
        _counters[key] = total = _counters.get(key, 0.0) + 1
        _steps_window.append((now, int(total)))
        while len(_steps_window) > 2 and _steps_window[1][0] < now - 60:
            _steps_window.pop(0)


def steps_per_second() -> float:
    with _lock:
        if len(_steps_window) < 2:
            return 0.0
        (t0, s0), (t1, s1) = _steps_window[0], _steps_window[-1]
    if time.monotonic() - t1 > 60:
        return 0.0  # no step for a minute
    return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0


def render(database: Callable[[], dict] | None = None) -> str:
    """The Prometheus text exposition of every metric; ``database`` returns the scrape-time figures."""
    lines: list[str] = []
    samples: dict[str, list[str]] = {}
    with _lock:
        for (name, labels), value in sorted(_counters.items()):
            samples.setdefault(name, []).append(f"{name}{_labels(labels)} {value:g}")
        for (name, labels), h in sorted(_histograms.items()):
            out = samples.setdefault(name, [])
            for bound, count in zip(DURATION_BUCKETS, h, strict=False):
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                out.append(f"{name}_bucket{_labels(labels + (('le', le),))} {count:g}")
            out += [f"{name}_sum{_labels(labels)} {h[-2]:g}", f"{name}_count{_labels(labels)} {h[-1]:g}"]
    samples["trainsrv_training_steps_per_second"] = [f"trainsrv_training_steps_per_second {steps_per_second():g}"]
    if database is not None:
        try:
            figures = database()
            samples["trainsrv_up"] = ["trainsrv_up 1"]
            samples["trainsrv_jobs"] = [
                f"trainsrv_jobs{_labels((('kind', k), ('state', s)))} {n}"
                for (s, k), n in sorted(figures["jobs"].items())
            ]
            samples["trainsrv_validation_lag_seconds"] = [f"trainsrv_validation_lag_seconds {figures['lag_s']:g}"]
        except Exception as exc:  # a scrape must answer even when the database does not
            log.warning("metrics: database figures unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
            samples["trainsrv_up"] = ["trainsrv_up 0"]
    for name, (kind, text) in HELP.items():
        if name in samples:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples[name]]
    return "\n".join(lines) + "\n"


def _labels(labels: tuple) -> str:
    if not labels:
        return ""
    escaped = (f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels)
    return "{" + ",".join(escaped) + "}"


def database_figures(engine) -> Callable[[], dict]:
    """Scrape-time figures from the database (a short statement timeout: a scrape never hangs)."""
    import sqlalchemy as sa

    from app.db import queries

    def read() -> dict:
        with engine.connect() as conn:
            conn.execute(sa.text("SET statement_timeout = '5s'"))
            jobs = {(r.state, r.kind): r.jobs for r in conn.execute(queries.get("metrics.queue_depth"))}
            lag = conn.execute(queries.get("metrics.validation_lag")).scalar()
        return {"jobs": jobs, "lag_s": float(lag or 0)}

    return read


def health(engine) -> tuple[int, dict]:
    import sqlalchemy as sa

    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return 200, {"status": "ok", "database": "ok"}
    except Exception as exc:  # the health answer is the point; the reason goes in the body
        return 503, {"status": "unavailable", "database": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}


def serve(engine, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start the metrics / health server in a daemon thread; returns it (``shutdown()`` stops it)."""
    figures = database_figures(engine)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            if self.path.split("?")[0] == "/metrics":
                self._send(200, render(figures), "text/plain; version=0.0.4; charset=utf-8")
            elif self.path.split("?")[0] in ("/health", "/healthz"):
                status, body = health(engine)
                self._send(status, json.dumps(body) + "\n", "application/json")
            else:
                self._send(404, "not found: try /metrics or /health\n", "text/plain")

        def _send(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):  # scrapes every few seconds would flood the log
            log.debug("metrics: " + fmt, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, health on /health", host, server.server_address[1])
    return server
