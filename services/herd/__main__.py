"""`python -m herd`: what local daemons, tests and benchmarks spawn (with an explicit working directory,
so a package named like ours in the user's folder can never shadow Herd)."""

from herd.cli import main

main()
