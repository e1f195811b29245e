"""The prediction history (`analytics.delay_predictions`), drift rows and retraining requests.

Scoring 100,000 orders every 15 minutes would write 9.6 million rows a day if every score
were kept; most are the same as the last one. A row is stored only when an order's
prediction changes: another model, `at_risk` flipped, or p_late moved by `P_LATE_STEP` or
more since the order's last stored row. So the history answers "what did we say, and when"
exactly at the level that matters for a decision, and its size follows the changes, not
the scoring frequency. Rows older than BUFFALO_PREDICTION_RETENTION_DAYS are deleted.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from buffalo_assets.storage.bulk import write_frame
from buffalo_assets.storage.tables import (
    delay_model_drift,
    delay_model_performance,
    delay_predictions,
    retrain_requests,
)

if TYPE_CHECKING:
    import pandas as pd
else:
    from buffalo_assets.lazy import pd

P_LATE_STEP = 0.01
HISTORY_COLUMNS: tuple[str, ...] = tuple(c.name for c in delay_predictions.columns)


def changed_predictions(engine: sa.Engine, risk: pd.DataFrame) -> pd.DataFrame:
    """The scored rows of `risk` (order_delay_risk rows) whose prediction changed since the last stored."""
    scored = risk[risk["p_late"].notna()]
    if not len(scored):
        return scored.reindex(columns=list(HISTORY_COLUMNS))
    with engine.connect() as connection:
        last = pd.read_sql_query(
            sa.text(
                "SELECT DISTINCT ON (order_id) order_id, model_version AS last_model, p_late AS last_p, "
                "at_risk AS last_at_risk FROM analytics.delay_predictions "
                "WHERE order_id = ANY(:ids) ORDER BY order_id, scored_at DESC"
            ),
            connection,
            params={"ids": scored["order_id"].astype(str).tolist()},
        )
    merged = scored.merge(last, on="order_id", how="left")
    new = merged["last_model"].isna()
    changed = (
        new
        | (merged["model_version"] != merged["last_model"])
        | (merged["at_risk"].astype(bool) != merged["last_at_risk"].astype("boolean").fillna(False))
        | ((merged["p_late"] - merged["last_p"]).abs() >= P_LATE_STEP - 1e-12)
    )
    return merged.loc[changed.to_numpy(dtype=bool), list(HISTORY_COLUMNS)].reset_index(drop=True)


def append_predictions(engine: sa.Engine, rows: pd.DataFrame, retention_days: float, now: datetime) -> int:
    """Store `rows` (from `changed_predictions`) and delete rows older than the retention; returns deleted."""
    with engine.begin() as connection:
        if len(rows):
            write_frame(connection, delay_predictions, rows, "upsert", primary_key=("order_id", "scored_at"))
        deleted = connection.execute(
            sa.text("DELETE FROM analytics.delay_predictions WHERE scored_at < :before"),
            {"before": now - timedelta(days=retention_days)},
        ).rowcount
    return int(deleted or 0)


def append_drift(engine: sa.Engine, rows: pd.DataFrame, retention_days: float, now: datetime) -> None:
    with engine.begin() as connection:
        if len(rows):
            write_frame(connection, delay_model_drift, rows, "upsert", primary_key=("computed_at", "feature"))
        connection.execute(
            sa.text("DELETE FROM analytics.delay_model_drift WHERE computed_at < :before"),
            {"before": now - timedelta(days=retention_days)},
        )


def replace_weeks(engine: sa.Engine, performance: pd.DataFrame, first_week: date, last_week: date) -> None:
    """Replace the realized accuracy of the weeks `first_week`..`last_week` (Mondays) with
    `performance`, in one transaction: a slice no longer there (an order weighed since, so in
    another band) goes; other weeks stay as they are."""
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "DELETE FROM analytics.delay_model_performance WHERE week_start BETWEEN :first AND :last"
            ),
            {"first": first_week, "last": last_week},
        )
        if len(performance):
            write_frame(connection, delay_model_performance, performance, "append")


def current_drift(connection: sa.Connection) -> pd.DataFrame:
    """The drift rows of the newest scoring, by the champion scoring now; empty when that
    scoring compared nothing (no usable champion, no profile, nothing in flight)."""
    return pd.read_sql_query(
        sa.text(
            "SELECT d.* FROM analytics.delay_model_drift d "
            "JOIN ops.delay_models m ON m.model_version = d.model_version AND m.status = 'champion' "
            "WHERE d.computed_at = (SELECT max(scored_at) FROM analytics.order_delay_risk)"
        ),
        connection,
    )


# -- retraining requests ------------------------------------------------------------------------


def open_request(connection: sa.Connection) -> dict[str, Any] | None:
    """The oldest request not yet served by a training."""
    found = connection.execute(
        sa.text(
            "SELECT requested_at, reason, champion_version FROM ops.delay_retrain_requests "
            "WHERE served_by IS NULL ORDER BY requested_at LIMIT 1"
        )
    ).first()
    return found._asdict() if found is not None else None


def request_retraining(
    engine: sa.Engine, *, reason: str, champion_version: str | None, run_id: str | None, now: datetime
) -> bool:
    """Ask `delay_model` for a challenger, unless a request is open or the newest training was
    a requested challenger that lost.

    One request per training cycle: after a challenger trained on request was not promoted,
    the next one comes on the usual schedule (BUFFALO_MODEL_RETRAIN_HOURS); after one was
    promoted, the new champion may be asked to retrain when it drifts in turn.
    """
    with engine.begin() as connection:
        connection.execute(sa.text("LOCK TABLE ops.delay_retrain_requests IN SHARE ROW EXCLUSIVE MODE"))
        if open_request(connection) is not None:
            return False
        newest = connection.execute(
            sa.text(
                "SELECT trained_because, status FROM ops.delay_models WHERE status <> 'untrained' "
                "ORDER BY trained_at DESC, model_version DESC LIMIT 1"
            )
        ).first()
        if (
            newest is not None
            and str(newest.trained_because).startswith("requested")
            and newest.status != "champion"
        ):
            return False
        connection.execute(
            sa.insert(retrain_requests).values(
                requested_at=now, reason=reason, champion_version=champion_version, run_id=run_id
            )
        )
    return True
