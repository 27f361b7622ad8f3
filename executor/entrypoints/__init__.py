"""How work reaches the executor: its Kafka handler and its gRPC servicer."""
