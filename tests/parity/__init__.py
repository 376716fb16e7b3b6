"""Parity tests: Airflow 2 BackfillJob behaviours, end to end (DESIGN 4, issue 4)."""
