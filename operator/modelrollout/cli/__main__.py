"""`python -m modelrollout.cli`: the plugin without the console script."""

from modelrollout.cli.main import main

main()
