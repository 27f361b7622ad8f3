"""The stored call template of a schedule (the `template` jsonb of `schedules`): every format
version ever written still reads back, and the newest one is written exactly as its golden
files say (orchestrator/adapters/schedules.py lists the versions).

A failure of `test_today_s_templates_are_written_as_the_newest_golden_files` means the stored
form changed: that is a new format version (keep reading the old one), with golden files of
its own. Regenerating the newest version's files is an explicit act, never part of a run:

    UPDATE_GOLDEN=1 PYTHONPATH=.:gen .venv/bin/pytest \
        tests/unit/orchestrator/test_stored_schedule_template_golden.py
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.adapters import codec
from orchestrator.adapters.schedules import (
    TEMPLATE_FORMAT_VERSION,
    UnreadableTemplateError,
    decode_template,
    encode_template,
)
from orchestrator.domain.model import DEFAULT_RETRY_POLICY, HttpRequest, RetryPolicy
from orchestrator.domain.schedules import CallTemplate

GOLDEN = Path(__file__).parents[2] / "golden" / "orchestrator"
NEWEST = GOLDEN / f"schedule_template_v{TEMPLATE_FORMAT_VERSION}"
VERSIONS = sorted(GOLDEN.glob("schedule_template_v*"))

CASES = {
    "minimal": CallTemplate(
        request=HttpRequest("GET", "https://example.test/", (), b"", timedelta(seconds=30)),
        tags=frozenset(),
        retry_policy=DEFAULT_RETRY_POLICY,
    ),
    "full": CallTemplate(
        request=HttpRequest(
            "POST",
            "https://example.test/tick?x=1",
            (
                ("content-type", "application/json"),
                # Stored sealed, never in clear (a fixed value here: sealing is randomised).
                ("Authorization", "sealed:AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ("X-Repeated", "a"),
                ("X-Repeated", "b"),
            ),
            b'{"tick": "\xc3\xa9t\xc3\xa9"}',
            timedelta(seconds=12, microseconds=500_000),
        ),
        tags=frozenset({"nightly", "billing"}),
        retry_policy=RetryPolicy(
            max_attempts=7,
            max_retry_duration=timedelta(hours=2),
            min_backoff=timedelta(milliseconds=250),
            max_backoff=timedelta(minutes=5),
            multiplier=1.5,
            jitter=0.0,
            retryable_status_codes=frozenset({429, 503}),
        ),
        callback_url="https://example.test/done",
        failure_callback_url="https://example.test/failed",
        max_lateness=timedelta(seconds=90),
    ),
}


def _text(template: CallTemplate) -> str:
    return json.dumps(encode_template(template), indent=2, sort_keys=True) + "\n"


@pytest.fixture(scope="module", autouse=True)
def update_golden() -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        NEWEST.mkdir(exist_ok=True)
        for name, template in CASES.items():
            (NEWEST / f"{name}.json").write_text(_text(template), encoding="utf-8")


def test_every_format_version_has_a_golden_file_per_case() -> None:
    assert [p.name for p in VERSIONS] == [
        f"schedule_template_v{v}" for v in range(1, TEMPLATE_FORMAT_VERSION + 1)
    ]
    for version in VERSIONS:
        assert sorted(p.stem for p in version.glob("*.json")) == sorted(CASES), version.name


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("version", [p.name for p in VERSIONS])
def test_a_stored_template_of_every_version_decodes_to_its_domain_value(
    version: str, name: str
) -> None:
    data = json.loads((GOLDEN / version / f"{name}.json").read_text(encoding="utf-8"))
    assert decode_template(data) == CASES[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_today_s_templates_are_written_as_the_newest_golden_files(name: str) -> None:
    assert _text(CASES[name]) == (NEWEST / f"{name}.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(CASES))
def test_request_and_retry_policy_are_stored_as_a_call_s_are(name: str) -> None:
    # One stored form of a request in the orchestrator: a change to the call's is a change
    # to the template's too, and shows here.
    stored = encode_template(CASES[name])
    assert stored["request"] == codec.encode_request(CASES[name].request)
    assert stored["retry_policy"] == codec.encode_retry_policy(CASES[name].retry_policy)


def test_an_unknown_format_version_is_refused() -> None:
    data = encode_template(CASES["full"])
    with pytest.raises(UnreadableTemplateError):
        decode_template({**data, "v": TEMPLATE_FORMAT_VERSION + 1})
    with pytest.raises(UnreadableTemplateError):
        decode_template({k: v for k, v in data.items() if k != "request"})
