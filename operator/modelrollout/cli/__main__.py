"""`python -m modelrollout.cli`: the plugin without the console script."""

from modelrollout.cli.commands import main

main()
