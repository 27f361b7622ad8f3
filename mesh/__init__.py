"""Code shared by the mesh's services: config, logging, Kafka, Postgres, gRPC serving."""
