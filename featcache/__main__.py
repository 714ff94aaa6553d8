"""`python -m featcache`: the same as the `featcache` command."""

from .cli import main

main()
