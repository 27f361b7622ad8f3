"""The short form of `make chaos` (bench/chaos.py): an executor SIGKILLed while calls are due;
one tenant flooding a slow target on an executor with small held-request caps while another
tenant's calls must stay on time (fairness); then poison inputs among ordinary calls of three
tenants. On a mesh of its own (a poison input that wedges a mesh must not spoil the session's
shared one). Nothing may be lost, stuck, early or completed twice; duplicates are allowed.
CHAOS_SEED=<n> replays a run's random moments."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import pytest

from bench import chaos
from meshctl import mesh
from meshctl.layout import Layout

SCENARIOS = ("kill-executor", "fairness", "poison")
# fairness: 96 calls to a 2 s target drain in 12 s at the flooding tenant's share of 16.
OPTIONS = chaos.Options(calls=80, span_s=6.0, patience_s=20.0, fair_flood=96, fair_slow_s=2.0)


@pytest.fixture(scope="module")
def chaos_mesh(test_slot: int) -> Iterator[Layout]:
    layout = chaos.with_chaos_env(chaos.chaos_layout_for_slot(test_slot))
    chaos.fresh_mesh(layout)
    yield layout
    if not os.environ.get("KEEP_TEST_MESH"):
        mesh.down(layout)


async def test_no_call_is_lost_stuck_early_or_completed_twice_under_faults(
    chaos_mesh: Layout,
) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**31))
    began = time.monotonic()
    results = await chaos.run_suite(chaos_mesh, SCENARIOS, OPTIONS, seed)
    took = time.monotonic() - began
    failed = [r.scenario for r in results if r.failed]
    assert not failed, (
        f"chaos (seed {seed}, {took:.0f}s): {', '.join(failed)} failed; a row names how many"
        " calls were lost (never reached the sink, or unknown to the API), stuck (not terminal"
        f" {OPTIONS.patience_s:.0f}s after the last due time), early, sent with another"
        " idempotency key, completed in two different states, or refused otherwise than a"
        " poison input's 400 (the refused column); for fairness, how many of the other"
        f" tenant's calls came more than {OPTIONS.fair_bound_s:g}s late:\n" + chaos.report(results)
    )
    assert [r.scenario for r in results] == list(SCENARIOS)
    # Every ordinary call got through: the poison ones may be refused or fail, nothing more.
    expected = {"fairness": OPTIONS.fair_flood + OPTIONS.fair_calls}
    assert all(r.calls >= expected.get(r.scenario, OPTIONS.calls) for r in results), chaos.report(
        results
    )
