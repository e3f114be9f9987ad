"""The `onshore` command line."""
