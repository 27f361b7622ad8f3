"""watchdog_at: the orchestrator keeps dispatch leases and attempt deadlines itself.

Revision ID: 0005
Revises: 0004

The column is the fire time of the call's DISPATCH_LEASE (Dispatched) or ATTEMPT_DEADLINE
(Running) timer, NULL in every other state; the store writes it with every state change and
the watchdog (orchestrator/entrypoints/watchdog.py) sweeps it through the partial index, which
holds only the calls in flight, so a sweep that finds nothing overdue is one short index probe.

Upgrade. Calls already Dispatched or Running are backfilled from their state (the same
fields the store derives it from), so the sweep guards them at once. Their lease and deadline
timers already armed in the scheduler are left alone and still fire: whichever of the two
comes second is refused by the core as a stale timer (the fire time or the state no longer
matches), so a call is never dispatched or retried twice for one timer. During a rolling
upgrade older replicas still arm scheduler timers for their own writes, and they leave
`watchdog_at` untouched; the sweep rewrites a value that disagrees with the state
(`PostgresServiceCallStore.overdue_watchdogs`), so the column converges once they are gone.

Downgrade drops the column. Calls Dispatched or Running at that moment have no scheduler
timer for their lease or deadline (the newer code never armed one), so one whose executor is
lost would stay there: downgrade with no calls in flight, or accept that risk for them.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The state's timestamps are ISO 8601 with an offset (orchestrator/adapters/codec.py), so
    # the cast is exact to the microsecond, as the sweep's comparison with the state requires.
    op.execute(
        """
        ALTER TABLE orchestrator.service_calls ADD COLUMN watchdog_at timestamptz;
        UPDATE orchestrator.service_calls
           SET watchdog_at = CASE status
                   WHEN 'DISPATCHED' THEN (state->>'lease_expires_at')::timestamptz
                   WHEN 'RUNNING' THEN (state->>'deadline')::timestamptz
               END
         WHERE status IN ('DISPATCHED', 'RUNNING');
        CREATE INDEX service_calls_watchdog_due
            ON orchestrator.service_calls (watchdog_at) WHERE watchdog_at IS NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP INDEX orchestrator.service_calls_watchdog_due;"
        " ALTER TABLE orchestrator.service_calls DROP COLUMN watchdog_at;"
    )
