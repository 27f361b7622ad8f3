"""What drives the scheduler's use cases: the Kafka handler of timer requests, the gRPC API."""
