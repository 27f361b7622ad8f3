"""In-memory fakes of the ports, for unit tests only; each passes its port's contract suite."""
