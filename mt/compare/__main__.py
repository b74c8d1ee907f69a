"""`python -m mt.compare`."""

from mt.compare.cli import main

main()
