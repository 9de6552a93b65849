"""``python -m eventservice`` runs the command-line interface."""

from eventservice.cli.main import main

main()
