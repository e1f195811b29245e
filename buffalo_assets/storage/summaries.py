"""What the `buffalo` commands read back to show: counts of the stored tables, the analytics
in brief, the goods in flight and the newest delivery report.

Read-only queries over the `raw`, `core`, `analytics` and `ops` schemas, each returning plain
values for the command to word (the demo's summary, `buffalo report`); none writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa


@dataclass(frozen=True)
class StoredCounts:
    """Rows in the tables an ingest and the transform fill."""

    order_ids: int
    order_versions: int
    fetch_errors: int
    clean_orders: int
    order_items: int
    order_events: int


def stored_counts(connection: sa.Connection) -> StoredCounts:
    """Rows in raw.order_ids, raw.order_versions, ops.fetch_errors and the core tables."""
    row = connection.execute(
        sa.text(
            "SELECT (SELECT count(*) FROM raw.order_ids), (SELECT count(*) FROM raw.order_versions), "
            "(SELECT count(*) FROM ops.fetch_errors), (SELECT count(*) FROM core.clean_orders), "
            "(SELECT count(*) FROM core.order_items), (SELECT count(*) FROM core.order_events)"
        )
    ).one()
    return StoredCounts(*(int(count) for count in row))


def orders_by_stage(connection: sa.Connection) -> list[tuple[str, int]]:
    """(stage, orders) of core.clean_orders, the most common stage first."""
    rows = connection.execute(
        sa.text("SELECT stage, count(*) FROM core.clean_orders GROUP BY 1 ORDER BY 2 DESC")
    ).all()
    return [(stage, int(count)) for stage, count in rows]


def delivered_and_late(connection: sa.Connection) -> tuple[int, int]:
    """Delivered orders, and how many of them arrived late (analytics.order_status_now)."""
    delivered, late = connection.execute(
        sa.text(
            "SELECT count(*), count(*) FILTER (WHERE is_late) FROM analytics.order_status_now "
            "WHERE delivered_at IS NOT NULL"
        )
    ).one()
    return int(delivered), int(late)


@dataclass(frozen=True)
class RiskCounts:
    """Orders in flight (analytics.order_delay_risk), how many a model scored, how many are at risk."""

    in_flight: int
    scored: int
    at_risk: int


def risk_counts(connection: sa.Connection) -> RiskCounts:
    """Orders in flight, scored and at risk, from analytics.order_delay_risk."""
    in_flight, scored, at_risk = connection.execute(
        sa.text(
            "SELECT count(*), count(p_late), count(*) FILTER (WHERE at_risk) FROM analytics.order_delay_risk"
        )
    ).one()
    return RiskCounts(int(in_flight), int(scored), int(at_risk))


def unsent_alerts_by_reason(connection: sa.Connection) -> list[tuple[str, int]]:
    """(reason, alerts) of the customer alerts neither sent nor given up on, the most first."""
    rows = connection.execute(
        sa.text(
            "SELECT reason, count(*) FROM analytics.customer_alerts "
            "WHERE sent_at IS NULL AND gave_up_at IS NULL GROUP BY reason ORDER BY count(*) DESC, reason"
        )
    ).all()
    return [(reason, int(count)) for reason, count in rows]


@dataclass(frozen=True)
class WorklistTop:
    """The first parcel of analytics.bi_delay_worklist that has reasons."""

    order_id: str
    p_late: float
    declared_value_zar: float | None
    reasons: str


def worklist_top(connection: sa.Connection) -> WorklistTop | None:
    """The parcel with the largest expected loss among those at risk and not yet overdue."""
    row = connection.execute(
        sa.text(
            "SELECT order_id, p_late, declared_value_zar, reasons FROM analytics.bi_delay_worklist "
            "WHERE reasons IS NOT NULL AND p_late < 1 ORDER BY rank LIMIT 1"
        )
    ).first()
    if row is None:
        return None
    value = float(row.declared_value_zar) if row.declared_value_zar is not None else None
    return WorklistTop(str(row.order_id), float(row.p_late), value, str(row.reasons))


def drifted_features(connection: sa.Connection) -> list[str] | None:
    """The features the newest scoring's drift comparison flagged; None when it compared nothing."""
    rows = connection.execute(
        sa.text(
            "SELECT d.feature, d.drifted FROM analytics.delay_model_drift d "
            "JOIN ops.delay_models m ON m.model_version = d.model_version AND m.status = 'champion' "
            "WHERE d.computed_at = (SELECT max(scored_at) FROM analytics.order_delay_risk)"
        )
    ).all()
    if not rows:
        return None
    return [str(row.feature) for row in rows if row.drifted]


@dataclass(frozen=True)
class GoodsInFlight:
    """One kind of goods in flight: its name as written, units, and declared value (ZAR)."""

    name: str
    units: float
    value_zar: float | None


def goods_in_flight(connection: sa.Connection) -> list[GoodsInFlight]:
    """The goods in flight (analytics.inbound_stock), the most units first (then by goods)."""
    rows = connection.execute(
        sa.text(
            "SELECT min(goods_name) AS name, sum(quantity) AS units, sum(declared_value_zar) AS value "
            "FROM analytics.inbound_stock WHERE state = 'in_flight' "
            "GROUP BY goods ORDER BY units DESC, goods"
        )
    ).all()
    return [GoodsInFlight(row.name, row.units, row.value) for row in rows]


def latest_delivery_report(connection: sa.Connection) -> str | None:
    """The HTML of the newest rendered delivery report (ops.delivery_reports); None before the first."""
    html: str | None = connection.execute(
        sa.text("SELECT html FROM ops.delivery_reports ORDER BY generated_at DESC LIMIT 1")
    ).scalar()
    return html
