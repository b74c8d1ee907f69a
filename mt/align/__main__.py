"""`python -m mt.align ...`: see mt/align/cli.py."""

from mt.align.cli import main

main()
