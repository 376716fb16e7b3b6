"""Integration tests: real workers, coordinators, Redis and databases prove DESIGN 5."""
