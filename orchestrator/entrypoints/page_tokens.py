"""Opaque, tamper-evident page tokens bound to the filter they were issued for: the public
API's own text form of a list position (ports.Cursor), issued and read by grpc_api.py only."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime

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
