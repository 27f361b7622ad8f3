"""Opaque, tamper-evident page tokens bound to the filter they were issued for: the public
API's own text form of a list position (ports.Cursor), issued and read by the servicers only."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from orchestrator.domain.validation import FieldViolation
from orchestrator.mapping import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from orchestrator.ports import Cursor


class BadPageTokenError(ValueError):
    pass


class PageTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def issue(self, cursor: Cursor, filter_key: str) -> str:
        body = json.dumps(
            {
                "v": cursor.sort_value.isoformat(),
                "id": cursor.service_call_id,
                "f": _digest(filter_key),
            },
            separators=(",", ":"),
        ).encode()
        mac = hmac.new(self._secret, body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")

    def read(self, token: str, filter_key: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as e:
            raise BadPageTokenError("page_token is not a token this API issued") from e
        mac, body = raw[:16], raw[16:]
        expected = hmac.new(self._secret, body, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            raise BadPageTokenError("page_token is not a token this API issued")
        data = json.loads(body)
        if data["f"] != _digest(filter_key):
            raise BadPageTokenError("page_token was issued for a different filter or order")
        return Cursor(datetime.fromisoformat(data["v"]), data["id"])


def _digest(filter_key: str) -> str:
    return hashlib.sha256(filter_key.encode()).hexdigest()[:16]


# Schedules and queues are listed by id alone: their tokens carry this constant as the sort
# value, and the id to list after.
_NO_SORT_VALUE = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class IdPage:
    """The paging fields of a List request over resources listed by id (ListSchedules,
    ListQueues), read: how many, after which id, and every problem with them."""

    page_size: int
    after: str | None
    problems: list[FieldViolation]


class IdPageTokens:
    """Page tokens for resources listed by id, bound to the kind of resource and the tenant
    (a token of one tenant's schedules does not page another's, nor its queues)."""

    def __init__(self, tokens: PageTokens, kind: str) -> None:
        self._tokens = tokens
        self._kind = kind

    def read(self, tenant_id: str, page_size: int, page_token: str) -> IdPage:
        problems: list[FieldViolation] = []
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            problems.append(FieldViolation("page_size", f"must be between 0 and {MAX_PAGE_SIZE}"))
        after = None
        if page_token:
            try:
                after = self._tokens.read(page_token, self._filter(tenant_id)).service_call_id
            except BadPageTokenError as e:
                problems.append(FieldViolation("page_token", str(e)))
        return IdPage(page_size or DEFAULT_PAGE_SIZE, after, problems)

    def issue(self, tenant_id: str, next_after: str | None) -> str:
        """The next page's token; empty on the last page."""
        if next_after is None:
            return ""
        return self._tokens.issue(Cursor(_NO_SORT_VALUE, next_after), self._filter(tenant_id))

    def _filter(self, tenant_id: str) -> str:
        return f"{self._kind}\x00{tenant_id}"
