"""The worker side of Backfill: the Celery app and its one task.

`celery -A workers worker` will load the app from here. It arrives with the
engine (coordinator, claim and fencing); this package holds nothing yet.
"""
