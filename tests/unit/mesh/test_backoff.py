import pytest

from mesh.backoff import Backoff


def test_delays_double_from_first_up_to_the_ceiling() -> None:
    backoff = Backoff(first=0.05, ceiling=0.3)
    assert [backoff.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]


def test_reset_starts_short_again_and_peek_does_not_move_on() -> None:
    backoff = Backoff(first=1.0, ceiling=10.0)
    backoff.next()
    backoff.next()
    assert backoff.peek() == 4.0
    assert backoff.peek() == 4.0
    backoff.reset()
    assert backoff.next() == 1.0


@pytest.mark.parametrize(("first", "ceiling"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_rejects_a_first_delay_that_is_not_positive_or_above_the_ceiling(
    first: float, ceiling: float
) -> None:
    with pytest.raises(ValueError, match="first"):
        Backoff(first=first, ceiling=ceiling)
