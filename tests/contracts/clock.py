"""The Clock and IdGen contracts: fakes and the real adapters both pass them."""

from __future__ import annotations

from datetime import UTC, timedelta

from mesh.ports import Clock, IdGen


class ClockContract:
    """Subclasses provide `clock`."""

    def test_now_is_timezone_aware_utc(self, clock: Clock) -> None:
        now = clock.now()
        assert now.tzinfo is not None
        assert now.utcoffset() == timedelta(0)
        assert now.astimezone(UTC) == now

    def test_now_never_goes_back(self, clock: Clock) -> None:
        readings = [clock.now() for _ in range(100)]
        assert readings == sorted(readings)


class IdGenContract:
    """Subclasses provide `ids`."""

    def test_ids_are_unique_text(self, ids: IdGen) -> None:
        made = [ids.new_id() for _ in range(10_000)]
        assert all(isinstance(i, str) and i for i in made)
        assert len(set(made)) == len(made)
