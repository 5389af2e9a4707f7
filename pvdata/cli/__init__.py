"""The `pvdata` command line."""
