"""`python -m executor`."""

from executor.main import main

main()
