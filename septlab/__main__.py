"""python -m septlab: the same CLI as the septlab console script."""

from .cli import main

main()
