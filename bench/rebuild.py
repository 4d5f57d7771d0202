"""`python -m bench.rebuild NAME...`: rebuild read models in one pass, print JSON.

What `authledger projections rebuild NAME...` does (build_services, then
ReadModels.rebuild_targets and build), in a process of its own, timed from
the start of the build: its BuildReport (events, seconds, per read model
events applied and busy seconds) and when the last read model was switched
live (the registry's switched_at). The CLI's own figure is events / seconds,
which also counts the grace the build waits before dropping the schemas it
replaced (DROP_GRACE_S) and the drops.

The database comes from the environment, as for the CLI.
"""

from __future__ import annotations

import json
import sys
import time

import psycopg

from infrastructure.settings import Settings
from interfaces.bootstrap import build_services


def rebuild(names: list[str]) -> dict[str, object]:
    services = build_services(
        Settings(run_projections=False, run_mailer=False, run_webhooks=False)
    )
    try:
        targets = services.read_models.rebuild_targets(names)
        started = time.time()
        report = services.read_models.build(targets)
        with psycopg.connect(services.database_url) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM max(switched_at))"
                " FROM authledger.read_model_versions WHERE name = ANY(%s)",
                (names,),
            ).fetchone()
    finally:
        services.close()
    switched = float(row[0]) if row and row[0] is not None else float("nan")
    return {
        "events": report.events,
        "seconds": report.seconds,
        "switched_s": switched - started,
        "per_model": {
            name: {"applied": applied, "busy_s": busy}
            for name, (applied, busy) in report.per_model.items()
        },
    }


if __name__ == "__main__":
    print(json.dumps(rebuild(sys.argv[1:])), flush=True)
