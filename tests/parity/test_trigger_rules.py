"""Every trigger rule on real workers: final states match AIRFLOW_SEMANTICS.md section 2.

Ported in spirit from apache/airflow tests/jobs/test_backfill_job.py (2.x)
test_backfill_examples (example_skip_dag, example_branch_operator: skipped
and failed upstreams propagate through a backfill). One backfill of
`parity_rules` (tests/dags_parity/rules.py) over one date: `ok` succeeds,
`bad` fails, `skip` is skipped (always last), and a downstream task per
(rule, group of those upstreams) ends in the state written below BY HAND
from Airflow's table, not computed by the product's own code.

"Ran" is read from the ledger: a task the rule ran has a `start` line, one
it decided (upstream_failed / skipped) has none.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from support.processes import Cli

from . import observe
from .conftest import ParityStack
from .observe import day

BACKENDS = ("postgresql", "sqlite")
WORKERS = 4
RUN, UF, SKIP = "success", "upstream_failed", "skipped"

# group: osk = ok+bad+skip (S1 K1 F1), os = ok+skip (S1 K1), bs = bad+skip (K1 F1),
#        b = bad (F1), s = skip (K1), o = ok (S1)
EXPECTED = {
    #               osk   os    bs    b     s     o
    "all_success": (UF, SKIP, UF, UF, SKIP, RUN),
    "all_failed": (SKIP, SKIP, SKIP, RUN, SKIP, SKIP),
    "all_done": (RUN, RUN, RUN, RUN, RUN, RUN),
    "one_success": (RUN, RUN, UF, UF, SKIP, RUN),
    "one_failed": (RUN, SKIP, RUN, RUN, SKIP, SKIP),
    "one_done": (RUN, RUN, RUN, RUN, SKIP, RUN),
    "none_failed": (UF, RUN, UF, UF, RUN, RUN),
    "none_failed_min_one_success": (UF, RUN, UF, UF, SKIP, RUN),
    "none_skipped": (SKIP, SKIP, SKIP, RUN, SKIP, RUN),
    "all_skipped": (SKIP, SKIP, SKIP, SKIP, RUN, SKIP),
    "always": (RUN, RUN, RUN, RUN, RUN, RUN),
}
GROUPS = ("osk", "os", "bs", "b", "s", "o")
PROPAGATED = {"after_uf": UF, "after_skipped": SKIP, "done_after_uf": RUN}


def test_each_trigger_rule_ends_its_task_as_airflow_does(
    stack: ParityStack, db: Engine, cli: Cli
) -> None:
    done = cli("run", "parity_rules", "-s", "2016-01-01", "-e", "2016-01-01")
    assert done.code == 1, done.log  # `bad` failed
    assert "parity_rules/bad/2016-01-01" in done.stdout

    date = day("2016-01-01")
    found = {task: state for (task, when), state in observe.states(db, "parity_rules").items()}
    assert len(found) == 3 + len(EXPECTED) * len(GROUPS) + len(PROPAGATED)
    assert (found["ok"], found["bad"], found["skip"]) == (RUN, "failed", SKIP)
    expected = {
        f"{rule}__{group}": state
        for rule, row in EXPECTED.items()
        for group, state in zip(GROUPS, row, strict=True)
    }
    expected |= PROPAGATED
    wrong = {
        task: f"expected {state}, got {found[task]}"
        for task, state in expected.items()
        if found[task] != state
    }
    assert not wrong, wrong

    # Decided TIs never ran; the others ran exactly once.
    ran = observe.started(stack.ledger, "parity_rules")
    assert len(ran) == len(set(ran))
    ran_tasks = {key[1] for key in ran}
    assert ran_tasks == {"ok", "bad", "skip"} | {t for t, s in expected.items() if s == RUN}
    assert all(key[2] == date for key in ran)
    assert [r.state for r in observe.runs(db, "parity_rules")] == ["failed"]
