"""Every job kind trainsrv ships, one ``jobs`` module per area, imported here by name.

Importing a module registers its kinds (``app.jobs.registry.handler``). These modules keep torch
and the trainers out of their imports, so listing or queueing jobs stays light; plug-in kinds come
from the modules named in ``TRAINSRV_HANDLER_MODULES``."""

from app.events import jobs as events_jobs  # noqa: F401
from app.experiences import jobs as experiences_jobs  # noqa: F401
from app.jobs import builtin  # noqa: F401
from app.outcomes import jobs as outcomes_jobs  # noqa: F401
from app.registry import jobs as registry_jobs  # noqa: F401
from app.retention import jobs as retention_jobs  # noqa: F401
from app.session_replay import jobs as session_replay_jobs  # noqa: F401
from app.trainer import jobs as trainer_jobs  # noqa: F401
