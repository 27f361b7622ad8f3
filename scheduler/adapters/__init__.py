"""The scheduler's adapters: the timers table in Postgres, fired timers onto the bus, metrics."""
