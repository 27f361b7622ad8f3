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
from dataclasses import replace
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
from orchestrator.domain.model import (
    DEFAULT_RETRY_POLICY,
    HttpRequest,
    ResponseRules,
    RetryPolicy,
)
from orchestrator.domain.schedules import CallTemplate

GOLDEN = Path(__file__).parents[2] / "golden" / "orchestrator"
NEWEST = GOLDEN / f"schedule_template_v{TEMPLATE_FORMAT_VERSION}"
VERSIONS = range(1, TEMPLATE_FORMAT_VERSION + 1)

MINIMAL = CallTemplate(
    request=HttpRequest("GET", "https://example.test/", (), b"", timedelta(seconds=30)),
    tags=frozenset(),
    retry_policy=DEFAULT_RETRY_POLICY,
)
RULES = ResponseRules(success_statuses=((200, 299), (404, 404)), retryable_statuses=((409, 409),))

# Each case, and the format version that first could store it: every version from then on
# has a golden file of it.
CASES: dict[str, tuple[int, CallTemplate]] = {
    "minimal": (1, MINIMAL),
    "full": (
        1,
        CallTemplate(
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
    ),
    "with_rules": (
        2,
        replace(
            MINIMAL,
            request=replace(MINIMAL.request, url="https://example.test/tick"),
            tags=frozenset({"nightly"}),
            response_rules=RULES,
        ),
    ),
    "queued": (3, replace(MINIMAL, queue_id="billing", ordering_key="customer-42")),
}


def _text(template: CallTemplate) -> str:
    return json.dumps(encode_template(template), indent=2, sort_keys=True) + "\n"


def _stored_in(version: int) -> list[str]:
    return sorted(name for name, (since, _) in CASES.items() if since <= version)


@pytest.fixture(scope="module", autouse=True)
def update_golden() -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        NEWEST.mkdir(exist_ok=True)
        for name, (_, template) in CASES.items():
            (NEWEST / f"{name}.json").write_text(_text(template), encoding="utf-8")


def test_every_format_version_has_a_golden_file_per_case_it_can_store() -> None:
    assert sorted(p.name for p in GOLDEN.glob("schedule_template_v*")) == sorted(
        f"schedule_template_v{v}" for v in VERSIONS
    )
    for version in VERSIONS:
        folder = GOLDEN / f"schedule_template_v{version}"
        assert sorted(p.stem for p in folder.glob("*.json")) == _stored_in(version), folder


@pytest.mark.parametrize(
    ("version", "name"), [(v, name) for v in VERSIONS for name in _stored_in(v)]
)
def test_a_stored_template_of_every_version_decodes_to_its_domain_value(
    version: int, name: str
) -> None:
    path = GOLDEN / f"schedule_template_v{version}" / f"{name}.json"
    assert decode_template(json.loads(path.read_text(encoding="utf-8"))) == CASES[name][1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_today_s_templates_are_written_as_the_newest_golden_files(name: str) -> None:
    assert _text(CASES[name][1]) == (NEWEST / f"{name}.json").read_text(encoding="utf-8")


def test_optional_parts_are_keys_written_only_when_set() -> None:
    # A template without rules, queue or key is stored as version 1 stored it, but for "v".
    bare = encode_template(MINIMAL)
    assert not {"response_rules", "queue_id", "ordering_key"} & bare.keys()
    ruled = encode_template(CASES["with_rules"][1])
    assert ruled.pop("response_rules") == codec.encode_response_rules(RULES)
    queued = encode_template(CASES["queued"][1])
    assert (queued.pop("queue_id"), queued.pop("ordering_key")) == ("billing", "customer-42")
    assert queued == bare


@pytest.mark.parametrize("name", sorted(CASES))
def test_request_and_retry_policy_are_stored_as_a_call_s_are(name: str) -> None:
    # One stored form of a request in the orchestrator: a change to the call's is a change
    # to the template's too, and shows here.
    template = CASES[name][1]
    stored = encode_template(template)
    assert stored["request"] == codec.encode_request(template.request)
    assert stored["retry_policy"] == codec.encode_retry_policy(template.retry_policy)


def test_an_unknown_format_version_is_refused() -> None:
    data = encode_template(CASES["full"][1])
    with pytest.raises(UnreadableTemplateError):
        decode_template({**data, "v": TEMPLATE_FORMAT_VERSION + 1})
    with pytest.raises(UnreadableTemplateError):
        decode_template({k: v for k, v in data.items() if k != "request"})
