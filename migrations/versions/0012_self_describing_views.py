"""Views that describe themselves, the model's call beside the outcome, and the candles around a setup.

Why: analysts read the views in psql and Grafana, where the meanings were nowhere to be seen (only in
markdown), and the analyst role could not see what the model predicted nor what price did.

* every view and view column gets a ``COMMENT ON`` from ``sql/views/catalog.toml``, the source that
  docs/analysts.md is generated from (``app.db.catalog``); views created by later migrations get theirs
  when ``app.db.views.create`` creates them;
* ``v_profitable_setups`` v0002 appends ``predicted_move``, ``predicted_pivot`` and ``horizon_end``
  (replaced in place: same leading columns, grants stay);
* ``v_setup_candles`` v0001: the candles from two horizons before each validated setup to one horizon
  after its end, readable by ``trainsrv_analyst``.

Downgrade restores v_profitable_setups v0001, drops v_setup_candles and removes the comments.
"""

from alembic import op

from app.db import catalog, views

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    views.redefine("v_profitable_setups", 2)
    views.create("v_setup_candles", 1)
    catalog.apply(op.get_bind())


def downgrade():
    views.drop("v_setup_candles")
    views.replace("v_profitable_setups", 1)  # v0001 has fewer columns: CREATE OR REPLACE cannot drop them
    catalog.remove(op.get_bind())
