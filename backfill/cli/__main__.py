"""`python -m backfill.cli`: the same as the `backfill` console script."""

from backfill.cli import main

main()
