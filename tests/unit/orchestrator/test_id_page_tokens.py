"""Paging of resources listed by id (schedules, queues): a token pages only the list it was
issued for, and bad paging fields are named."""

from __future__ import annotations

from orchestrator.entrypoints.page_tokens import IdPageTokens, PageTokens
from orchestrator.mapping import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

TOKENS = PageTokens(b"k" * 32)


def test_a_token_reads_back_the_id_it_was_issued_after() -> None:
    schedules = IdPageTokens(TOKENS, "schedules")
    token = schedules.issue("acme", "nightly")
    page = schedules.read("acme", 10, token)
    assert (page.page_size, page.after, page.problems) == (10, "nightly", [])


def test_the_last_page_has_no_token_and_no_token_starts_at_the_beginning() -> None:
    queues = IdPageTokens(TOKENS, "queues")
    assert queues.issue("acme", None) == ""
    page = queues.read("acme", 0, "")
    assert (page.page_size, page.after, page.problems) == (DEFAULT_PAGE_SIZE, None, [])


def test_a_token_does_not_page_another_tenant_s_list_nor_another_kind() -> None:
    token = IdPageTokens(TOKENS, "schedules").issue("acme", "nightly")
    for pages, tenant in (
        (IdPageTokens(TOKENS, "schedules"), "globex"),
        (IdPageTokens(TOKENS, "queues"), "acme"),
    ):
        page = pages.read(tenant, 10, token)
        assert page.after is None
        assert [v.field for v in page.problems] == ["page_token"]


def test_bad_paging_fields_are_each_named() -> None:
    page = IdPageTokens(TOKENS, "queues").read("acme", MAX_PAGE_SIZE + 1, "not-a-token")
    assert sorted(v.field for v in page.problems) == ["page_size", "page_token"]
    assert IdPageTokens(TOKENS, "queues").read("acme", -1, "").problems[0].field == "page_size"
