"""The bench's DAGs folder (BACKFILL_DAGS_FOLDER); also importable for its constants."""
