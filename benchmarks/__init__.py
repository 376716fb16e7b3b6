"""`make bench`: the engine's throughput and latency on PostgreSQL + Redis (`benchmarks.bench`)."""
