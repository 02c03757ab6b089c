"""`python -m shadow.cli ...` runs the `shadow` command."""

from shadow.cli import main

main()
