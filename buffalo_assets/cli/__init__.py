"""The `buffalo` command: the demo, the sandbox, the database and the Dagster UI.

One module per command group; this one makes the group `main` (the console script `buffalo`,
and `python -m buffalo_assets.cli`) out of them:

    sandbox.py     buffalo sandbox: the local Buffalo simulator and the options of its world
    settings.py    buffalo settings, buffalo check: the settings in use, and the account
    db.py          buffalo db url | upgrade | init | revision | grant-bi | make-cert | stop
    stock.py       buffalo stock import: Solo's stock list
    demo.py        buffalo demo: the main job, and its summary of what is stored
    _demo_runs.py  the demo's two Dagster runs, in the child process `buffalo demo` starts
    report.py      buffalo report: the latest delivery report, to a file or served over HTTP
    dev.py         buffalo dev, buffalo env: Dagster's own processes and what they are handed
    customer_alerts.py  buffalo customer-alerts resend: what the alert sender gave up on
    _common.py     what several commands share: the demo's database and world, child processes

Commands read the database only through `buffalo_assets/storage/`, and leave this process's
environment and working folder as they are: what Dagster processes need is handed to them
(`dev.dagster_environment`). A command imports what it needs (SQLAlchemy, pandas,
scikit-learn, Dagster) when it runs, so `buffalo --help` and `buffalo settings` start fast.
"""

from __future__ import annotations

import click

from buffalo_assets.cli import customer_alerts, db, demo, dev, report, sandbox, settings, stock


@click.group()
def main() -> None:
    """Buffalo Orders Platform: Buffalo shipping history in PostgreSQL, as Dagster assets."""


for _command in (
    sandbox.sandbox,
    settings.show_settings,
    settings.check,
    db.db,
    stock.stock,
    demo.demo,
    report.report,
    dev.dev,
    dev.show_env,
    customer_alerts.customer_alerts,
):
    main.add_command(_command)
