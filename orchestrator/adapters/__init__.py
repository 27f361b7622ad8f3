"""The orchestrator's adapters: Postgres store, outbox relay, Kafka mapping."""
