"""The executor's adapters: Kafka message mapping and the aiohttp client."""
