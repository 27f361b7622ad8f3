"""Contract suites: one set of tests that a fake and its real adapter must both pass."""
