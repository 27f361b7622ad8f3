"""The executor's adapters: Kafka message mapping and the HTTP/1.1 client."""
