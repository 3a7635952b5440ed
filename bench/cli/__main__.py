"""`python -m bench.cli`: the same app as the `bench` console script."""

from bench.cli import main

main()
