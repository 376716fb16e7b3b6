"""Store and engine tests on real databases (SQLite and PostgreSQL), no worker process."""
