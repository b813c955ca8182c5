"""The PostgreSQL backend: its driver, its queries and its migrations."""
