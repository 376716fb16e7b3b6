"""The Celery app both sides share: the coordinator publishes with it, workers run
it with their task registered (`workers.app`). Configuration only: no task here."""
