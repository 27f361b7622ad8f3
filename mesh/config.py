"""Typed configuration read from the environment, with clear errors for bad values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar


class ConfigError(ValueError):
    """A setting is missing or malformed; raised at start-up, never later."""


@dataclass(frozen=True, slots=True)
class Env:
    """Reads typed values from an environment mapping (os.environ in the composition roots)."""

    values: Mapping[str, str]

    def text(self, name: str, default: str | None = None) -> str:
        value = self.values.get(name, default)
        if value is None or value == "":
            raise ConfigError(f"{name} must be set")
        return value

    def integer(self, name: str, default: int) -> int:
        raw = self.values.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError as e:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from e

    def number(self, name: str, default: float) -> float:
        raw = self.values.get(name)
        if raw is None or raw == "":
            return default
        try:
            return float(raw)
        except ValueError as e:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from e

    def seconds(self, name: str, default: float) -> timedelta:
        """A duration given in (fractional) seconds."""
        return timedelta(seconds=self.number(name, default))

    def flag(self, name: str, default: bool) -> bool:
        raw = self.values.get(name)
        if raw is None or raw == "":
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")

    def items(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        raw = self.values.get(name)
        if raw is None:
            return default
        return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class CommonConfig:
    """Settings every service shares."""

    service_name: str
    grpc_host: str
    grpc_port: int
    database_url: str
    kafka_bootstrap: str
    topic_prefix: str
    log_level: str
    # Stable per replica (e.g. a StatefulSet pod name); empty means dynamic membership.
    group_instance_id: str | None

    DEFAULT_DATABASE_URL: ClassVar[str] = "postgresql://postgres@127.0.0.1:55432/servicecall"

    @classmethod
    def from_env(cls, env: Env, service_name: str, default_port: int) -> CommonConfig:
        return cls(
            service_name=service_name,
            grpc_host=env.text("GRPC_HOST", "127.0.0.1"),
            grpc_port=env.integer("GRPC_PORT", default_port),
            database_url=env.text("DATABASE_URL", cls.DEFAULT_DATABASE_URL),
            kafka_bootstrap=env.text("KAFKA_BOOTSTRAP", "127.0.0.1:59092"),
            topic_prefix=env.text("TOPIC_PREFIX", "servicecall."),
            log_level=env.text("LOG_LEVEL", "info"),
            group_instance_id=env.values.get("KAFKA_GROUP_INSTANCE_ID") or None,
        )
