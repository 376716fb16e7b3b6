"""DAG of tests/parity/test_trigger_rules.py: every trigger rule against known upstreams.

`parity_rules`: `ok` succeeds and `bad` fails; `skip` raises Skip once both
have ended (it is all_done downstream of them, so the upstreams always end
in the same order: ok/bad first, skip last). For each trigger rule R and
each group G of those upstreams there is a task `R__G` downstream of G:
  osk = ok, bad, skip | os = ok, skip | bs = bad, skip | b = bad | s = skip | o = ok
plus propagation checks: `after_uf` (all_success) after `all_success__osk`
(upstream_failed), `after_skipped` (all_success) after `all_success__os`
(skipped), and `done_after_uf` (all_done) after `all_success__osk`.
"""

from __future__ import annotations

import _parity as parity  # beside this file: the DAGs folder is importable
import pendulum

from backfill import DAG, Context, Skip, TriggerRule

GROUPS = {
    "osk": ("ok", "bad", "skip"),
    "os": ("ok", "skip"),
    "bs": ("bad", "skip"),
    "b": ("bad",),
    "s": ("skip",),
    "o": ("ok",),
}


def quick(ctx: Context) -> None:
    parity.timed(ctx, 0.0)


def fails(ctx: Context) -> None:
    parity.record("start", ctx)
    raise RuntimeError("bad fails")


def skips(ctx: Context) -> None:
    parity.record("start", ctx)
    raise Skip()


parity_rules = DAG(
    "parity_rules", schedule="@daily", start_date=pendulum.datetime(2016, 1, 1, tz="UTC")
)
upstream = {
    "ok": parity_rules.add_task("ok", quick),
    "bad": parity_rules.add_task("bad", fails),
    "skip": parity_rules.add_task("skip", skips, trigger_rule="all_done"),
}
[upstream["ok"], upstream["bad"]] >> upstream["skip"]
for _rule in TriggerRule:
    for _group, _members in GROUPS.items():
        _task = parity_rules.add_task(f"{_rule.value}__{_group}", quick, trigger_rule=_rule)
        [upstream[m] for m in _members] >> _task

_uf = parity_rules.tasks["all_success__osk"]
_skipped = parity_rules.tasks["all_success__os"]
_uf >> parity_rules.add_task("after_uf", quick)
_skipped >> parity_rules.add_task("after_skipped", quick)
_uf >> parity_rules.add_task("done_after_uf", quick, trigger_rule="all_done")
