"""Command-line interface: ``eventservice <command>``."""
