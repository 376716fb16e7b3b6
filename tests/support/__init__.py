"""What every kind of test shares (issue 9: one harness). Importable as `support`:
pytest puts `tests/` on sys.path for the modules directly in it."""
