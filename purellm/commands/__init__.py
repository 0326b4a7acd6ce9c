"""One module per CLI command; see purellm/cli.py."""
