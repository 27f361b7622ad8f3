"""How the orchestrator is reached: gRPC API, Kafka handler, background loops, admin CLI."""
