"""Fakes of the executor's ports, a scripted target, and a use case wired to them (unit scope)."""
