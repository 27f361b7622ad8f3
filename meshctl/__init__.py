"""Operator tooling: bring a local mesh up and down as processes, report status and logs."""
