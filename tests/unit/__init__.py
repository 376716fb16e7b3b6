"""Unit tests: pure code, no database, broker or process."""
