"""Inventory planning: goods in the air (`inbound_stock`) and days of stock cover (`stock_cover`).

Analytics assets like the others of group `analytics` (eager, written by the Postgres IO
manager); the computing is `buffalo_assets/analytics/stock.py`. `stock_cover` also reads
Solo's own stock list, `ops.stock_levels`, which `buffalo stock import FILE` loads: without
it the asset materializes an empty table and says so in its metadata.
"""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from buffalo_assets import settings
from buffalo_assets.analytics.status import promised_delivery
from buffalo_assets.analytics.stock import (
    ARRIVED,
    IN_FLIGHT,
    INBOUND_COLUMNS,
    STOCK_COVER_COLUMNS,
    inbound_stock,
    stock_cover,
)
from buffalo_assets.assets.analytics import KINDS, _common, _in, _table_metadata
from buffalo_assets.storage import tables
from buffalo_assets.storage.io_manager import DataFrame
from buffalo_assets.storage.resource import PostgresResource

if TYPE_CHECKING:
    import pandas as pd
else:
    from buffalo_assets.lazy import pd

TOP_GOODS = 5


def _top_goods(frame: DataFrame) -> str:
    """The goods with the most units in flight, as a markdown table."""
    flying = frame[frame["state"] == IN_FLIGHT]
    totals = (
        flying.groupby("goods_name")[["quantity", "declared_value_zar"]]
        .sum()
        .sort_values("quantity", ascending=False)
        .head(TOP_GOODS)
    )
    lines = ["| goods | units in flight | declared value (ZAR) |", "| --- | --- | --- |"]
    lines += [
        f"| {name} | {row.quantity:,.0f} | {row.declared_value_zar:,.2f} |" for name, row in totals.iterrows()
    ]
    return "\n".join(lines) if len(totals) else "nothing in flight"


@asset(
    name="inbound_stock",
    ins={
        "order_items": _in("order_items", ["order_id", "description", "quantity", "declared_value"]),
        "order_status_now": _in(
            "order_status_now", ["order_id", "stage", "promised_delivery_at", "delivered_at"]
        ),
        "order_delay_risk": _in(
            "order_delay_risk", ["order_id", "expected_delivery_at", "expected_low_at", "expected_high_at"]
        ),
    },
    kinds=KINDS,
    metadata=_table_metadata(tables.inbound_stock),
    **_common(),
)
def inbound_stock_asset(
    context: AssetExecutionContext,
    order_items: DataFrame,
    order_status_now: DataFrame,
    order_delay_risk: DataFrame,
) -> Output:
    """Goods in the air, for stock planning: the declared goods of every order not yet
    delivered (nor returned, cancelled, lost), by goods name (case and spacing ignored) and the
    ISO week (SAST) the delay model expects them in, with units, declared value and the
    model's range (earliest 10th percentile, latest 90th percentile of the week's orders).
    Orders the model has not scored are dated by their promise (`unscored_orders`). Rows with
    state `arrived`: goods delivered in the current ISO week."""
    as_of = datetime.now(UTC)
    frame = inbound_stock(order_items, order_status_now, order_delay_risk, as_of)[list(INBOUND_COLUMNS)]
    flying = frame[frame["state"] == IN_FLIGHT]
    arrived = frame[frame["state"] == ARRIVED]
    unscored = int(flying["unscored_orders"].sum())
    metadata: dict[str, Any] = {
        "goods_in_flight": MetadataValue.int(int(flying["goods"].nunique())),
        "units_in_flight": MetadataValue.float(float(flying["quantity"].sum())),
        "declared_value_in_flight_zar": MetadataValue.float(
            round(float(flying["declared_value_zar"].sum()), 2)
        ),
        "units_arrived_this_week": MetadataValue.float(float(arrived["quantity"].sum())),
        "unscored_orders": MetadataValue.int(unscored),
        "top_goods": MetadataValue.md(_top_goods(frame)),
        "as_of": as_of.isoformat(),
    }
    if unscored:
        metadata["note"] = MetadataValue.text(
            f"{unscored} order-weeks are dated by their promise: the delay model has not scored them "
            "(no model yet, or not rescored since they appeared)"
        )
    return Output(frame, metadata=metadata)


@asset(
    name="stock_cover",
    ins={"inbound_stock": _in("inbound_stock")},
    kinds=KINDS,
    metadata=_table_metadata(tables.stock_cover),
    **_common(),
)
def stock_cover_asset(
    context: AssetExecutionContext, inbound_stock: DataFrame, postgres: PostgresResource
) -> Output:
    """Days of stock cover per item of Solo's stock list (`ops.stock_levels`, loaded by
    `buffalo stock import FILE`): on hand now, less daily sales, plus what arrives before it
    runs out (`inbound_stock` by expected date), and the same with arrivals at their 90th
    percentile (pessimistic). `stockout_risk`: in the pessimistic view the shelf is empty
    before goods still in the air arrive (`gap_days_p90`), or, with nothing more in the air, it
    runs out before goods ordered now could arrive (the delivery promise). Empty, with a note, until a stock
    list is imported."""
    as_of = datetime.now(UTC)
    with postgres.get_engine().connect() as connection:
        levels = pd.read_sql_query(
            sa.text(
                "SELECT goods, goods_name, on_hand, daily_sales, as_of, imported_at FROM ops.stock_levels"
            ),
            connection,
        )
    if levels.empty:
        note = (
            "no stock levels: import Solo's stock list with `buffalo stock import FILE` "
            "(CSV goods,on_hand,daily_sales,as_of); nothing to compute until then"
        )
        context.log.info(note)
        empty = pd.DataFrame(columns=list(STOCK_COVER_COLUMNS))
        return Output(empty, metadata={"note": MetadataValue.text(note), "items": MetadataValue.int(0)})
    # How long goods ordered now take to arrive: the delivery promise from this moment.
    promised = promised_delivery(pd.Series([pd.Timestamp(as_of)]), settings.load().promise_business_days)
    reorder_days = (promised.iloc[0] - pd.Timestamp(as_of)) / pd.Timedelta(days=1)
    cover = stock_cover(levels, inbound_stock, as_of, reorder_days=reorder_days)[list(STOCK_COVER_COLUMNS)]
    flying_goods = set(inbound_stock.loc[inbound_stock["state"] == IN_FLIGHT, "goods"])
    return Output(
        cover,
        metadata={
            "items": MetadataValue.int(len(cover)),
            "stockout_risk": MetadataValue.int(int(cover["stockout_risk"].sum())),
            "items_with_inbound": MetadataValue.int(int(cover["goods"].isin(flying_goods).sum())),
            "inbound_goods_without_stock_level": MetadataValue.int(len(flying_goods - set(cover["goods"]))),
            "stock_imported_at": levels["imported_at"].max().isoformat(),
            "as_of": as_of.isoformat(),
        },
    )


STOCK_ASSETS = [inbound_stock_asset, stock_cover_asset]
