"""The pure decisions: a backfill's plan, a pass's decisions and the rules they follow."""
