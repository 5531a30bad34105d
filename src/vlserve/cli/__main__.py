"""`python -m vlserve.cli`: the same as the `vlserve` command."""

from vlserve.cli import main

main()
