"""``python -m cinestream.cli``."""

from cinestream.cli import main

main()
