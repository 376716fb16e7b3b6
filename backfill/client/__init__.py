"""The operations both front ends share: the command line (`backfill.cli`) and the web
page and HTTP API (`backfill.web`).

Invariants:
- each operation takes plain values (the strings a user typed or posted),
  validates them with one piece of code, and raises a `UserError` naming what
  is wrong before anything is written;
- each answer is built here as the JSON shape of DESIGN section 4
  (`shapes`), so `backfill status -o json` and `GET /api/v1/backfills/{id}`
  cannot drift apart: they are the same function's output;
- reads are one consistent snapshot (`store.reads.reading`); writes are one
  transaction whose first statement is a compare-and-set (`store.control`).
"""
