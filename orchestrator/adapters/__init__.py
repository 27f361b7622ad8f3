"""The orchestrator's adapters: Postgres store, outbox relay, tenants, parking lot, metrics."""
