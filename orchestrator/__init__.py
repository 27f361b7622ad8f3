"""Orchestrator service: owns the ServiceCall lifecycle and writes its truth to Postgres."""
