"""The scheduler's adapters."""
