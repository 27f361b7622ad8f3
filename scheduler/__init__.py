"""The scheduler: durable timers in Postgres that fire DueTimeReached onto Kafka."""
