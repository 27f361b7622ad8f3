"""Unit tests of the pure orchestrator domain core."""
