"""`make status`'s Prometheus line."""

from meshctl.mesh import describe_targets


def test_a_target_not_scraped_yet_is_not_called_down() -> None:
    line = describe_targets(
        {"http://a/metrics": "up", "http://b/metrics": "unknown", "http://c/metrics": "down"}
    )
    assert line == ("1/3 targets up (down: http://c/metrics) (not scraped yet: http://b/metrics)")


def test_all_up_says_nothing_more() -> None:
    assert describe_targets({"http://a/metrics": "up"}) == "1/1 targets up"
