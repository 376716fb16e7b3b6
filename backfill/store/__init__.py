"""Every SQL statement of Backfill lives in this package (SQLAlchemy Core only).

The tables (`schema`), engines and migrations (`db`, `migrations/`), then
statements by concern: `runs` (backfills and DAG runs), `pass_reads` (the one
snapshot a pass decides from), `past` (depends_on_past states), `tis`
(coordinator-side TI transitions and limits), `claims` (worker-side claim,
heartbeat, finish), `adopt` (taking over existing runs), `lease`, `control`
(pause, cancel), `pools`, `status` and `reads` (progress, listings, dry runs),
`journal` (the state journals checked against the transition tables), `audit`
and `audit_tries` (one backfill's journals checked against the guarantees).

Contract of every function:
- it takes an explicit `Connection`; the caller owns the transaction and
  decides what must be read or changed together;
- a read is one statement (or a fixed, small number), never one per row;
- a transition is ONE conditional statement naming the states it may come
  from and returning what it changed; a miss is reported, never ignored;
- timestamps go in and come out as timezone-aware UTC datetimes.
"""
