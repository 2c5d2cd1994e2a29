"""The operator commands: each a function that returns a result for the CLI to print."""
