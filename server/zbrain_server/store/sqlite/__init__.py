"""The SQLite backend: its driver, its queries and its migrations."""
