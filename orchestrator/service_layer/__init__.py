"""The orchestrator's use cases: they run the pure core behind the ports; no protobuf."""
