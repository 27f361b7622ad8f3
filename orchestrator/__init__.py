"""The orchestrator: owns service calls, applies the core, writes state + outbox atomically."""
