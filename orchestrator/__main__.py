"""`python -m orchestrator`."""

from orchestrator.main import main

main()
