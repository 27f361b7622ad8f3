"""The executor's use cases on domain values, behind its ports (executor/ports.py)."""
