"""Allow `python -m interfaces.cli`."""

from interfaces.cli.main import main

main()
