"""Pure domain model: states, transitions, identifiers and parameters. No I/O."""
