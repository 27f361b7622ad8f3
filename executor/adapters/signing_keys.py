"""Per-tenant webhook signing secrets from a JSON file, re-read when the file changes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from executor.domain.signing import SigningSecret, parse_signing_keys
from mesh.logs import get_logger

log = get_logger(__name__)

_Stamp = tuple[int, int, int]  # inode, size, mtime in ns


def load_signing_keys(path: Path) -> dict[str, tuple[SigningSecret, ...]]:
    """Reads and checks the file; ValueError (never quoting a secret) if it is malformed."""
    try:
        document = json.loads(path.read_bytes())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON (line {e.lineno})") from None
    try:
        return parse_signing_keys(document)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


class SigningKeysFile:
    """The executor's source of signing secrets: a file only it reads (a Kubernetes Secret
    mounted as a file, or one in the run directory locally), so the secrets never travel on
    Kafka or through the orchestrator's database.

    Rotation needs no restart: the file is checked at most every `check_every` seconds and read
    again when it changed (replace it atomically, e.g. by rename, as the kubelet does). A file
    that turns unreadable keeps the last good keys, so a bad edit does not stop signing. No
    file means no tenant signs.
    """

    def __init__(
        self,
        path: Path | None,
        check_every: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._check_every = check_every
        self._monotonic = monotonic
        self._keys: dict[str, tuple[SigningSecret, ...]] = {}
        self._stamp: _Stamp | None = None
        self._checked_at: float | None = None

    @property
    def path(self) -> Path | None:
        return self._path

    def secrets_for(self, tenant_id: str) -> tuple[SigningSecret, ...]:
        now = self._monotonic()
        if self._checked_at is None or now - self._checked_at >= self._check_every:
            self._checked_at = now
            self.refresh()
        return self._keys.get(tenant_id, ())

    def refresh(self) -> None:
        """Reads the file again if it changed; raises nothing."""
        if self._path is None:
            return
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            if self._stamp is not None:
                log.warning("signing keys file removed; no tenant signs", path=str(self._path))
            self._keys, self._stamp = {}, None
            return
        except OSError as e:
            log.error("signing keys file unreadable; keeping the last keys", error=str(e))
            return
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            keys = load_signing_keys(self._path)
        except (OSError, ValueError) as e:
            log.error("signing keys file rejected; keeping the last keys", error=str(e))
            return
        self._keys = keys
        log.info("signing keys loaded", path=str(self._path), tenants=len(keys))
