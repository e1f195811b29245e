"""Inbound stock and stock cover: sandbox over HTTP, real PostgreSQL, a real Dagster instance,
and the stock CSV through the real `buffalo stock import` command.

The inbound figures are checked against the same question asked of `core` in SQL; the cover
figures against numbers worked out by hand.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from dagster import AssetSelection, DagsterInstance

from buffalo_assets.analytics.model import range_offsets
from buffalo_assets.analytics.stages import STAGES
from buffalo_assets.analytics.stock import (
    INBOUND_COLUMNS,
    STOCK_COVER_COLUMNS,
    StockFileError,
    goods_key,
    inbound_stock,
    parse_stock_levels,
    stock_cover,
    today_sast,
)
from buffalo_assets.assets.stock import STOCK_ASSETS
from buffalo_assets.cli import main
from buffalo_assets.storage import tables
from tests.conftest import SandboxFactory
from tests.pipeline import ANALYTICS, metadata_of, run

DAY = 86_400.0
# The stock figures are checked for whatever risk scores the run produced.
ALL = [*ANALYTICS, *STOCK_ASSETS]
STOCK_TABLES = "analytics.inbound_stock, analytics.stock_cover, ops.stock_levels"
ANALYTICS_TABLES = (
    "analytics.order_stage_durations, analytics.order_status_now, analytics.delivery_kpis, "
    "analytics.delivery_late_shares, analytics.order_delay_risk, ops.delay_models, ops.delivery_reports, "
    "analytics.delay_predictions, analytics.delay_model_performance, analytics.delay_model_drift, "
    "ops.delay_retrain_requests"
)
# The question inbound_stock answers, asked of core and the risk scores directly: units and
# declared value of goods in flight per (lower-cased, single-spaced) name and SAST ISO week
# of the expected delivery (the promise, never before now, where the model scored nothing).
IN_FLIGHT_SQL = """
SELECT lower(regexp_replace(btrim(i.description), '\\s+', ' ', 'g')) AS goods,
       date_trunc('week', coalesce(r.expected_delivery_at, greatest(s.promised_delivery_at, now()))
                  AT TIME ZONE 'Africa/Johannesburg')::date AS week_start,
       count(DISTINCT i.order_id) AS orders, sum(i.quantity)::float AS quantity,
       sum(i.declared_value * i.quantity)::float AS declared_value_zar
FROM core.order_items AS i
JOIN analytics.order_status_now AS s USING (order_id)
LEFT JOIN analytics.order_delay_risk AS r USING (order_id)
WHERE s.stage NOT IN ('delivered', 'returned', 'cancelled', 'lost')
GROUP BY 1, 2
"""
ARRIVED_SQL = """
SELECT lower(regexp_replace(btrim(i.description), '\\s+', ' ', 'g')) AS goods,
       sum(i.quantity)::float AS quantity
FROM core.order_items AS i JOIN analytics.order_status_now AS s USING (order_id)
WHERE date_trunc('week', s.delivered_at AT TIME ZONE 'Africa/Johannesburg')
      = date_trunc('week', now() AT TIME ZONE 'Africa/Johannesburg')
GROUP BY 1
"""


@pytest.fixture
def stock_store(empty_store: sa.Engine) -> sa.Engine:
    with empty_store.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {ANALYTICS_TABLES}, {STOCK_TABLES}"))
    return empty_store


def stock_import(pg_url: str, path: Path) -> Result:
    """`buffalo stock import FILE`, the command as a user types it."""
    return CliRunner().invoke(main, ["stock", "import", str(path)], env={"BUFFALO_PG_URL": pg_url})


def stock_rows(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT goods, goods_name, on_hand, daily_sales, as_of, line "
                "FROM ops.stock_levels ORDER BY goods"
            )
        )
        return [tuple(row) for row in rows]


def test_inbound_stock_and_stock_cover_through_dagster_on_the_sandbox(
    start_sandbox: SandboxFactory,
    pg_url: str,
    instance: DagsterInstance,
    stock_store: sa.Engine,
    tmp_path: Path,
) -> None:
    running = start_sandbox(orders=1_500, history_days=90, start=time.time() - 60)
    first = run(running, pg_url, instance, ALL)
    assert first.success
    assert metadata_of(first, "delay_model")["trained"] is True
    inbound_meta = metadata_of(first, "inbound_stock")
    cover_meta = metadata_of(first, "stock_cover")
    # No stock list yet: an empty table and a note saying what to do, not a failure.
    assert cover_meta["items"] == 0 and "buffalo stock import" in cover_meta["note"]

    with stock_store.connect() as connection:
        inbound = pd.read_sql_query("SELECT * FROM analytics.inbound_stock", connection)
        expected = pd.read_sql_query(IN_FLIGHT_SQL, connection)
        arrived_expected = pd.read_sql_query(ARRIVED_SQL, connection)
        risk = pd.read_sql_query("SELECT * FROM analytics.order_delay_risk", connection)
        assert connection.execute(sa.text("SELECT count(*) FROM analytics.stock_cover")).scalar_one() == 0
    flying = inbound[inbound["state"] == "in_flight"]
    assert len(flying) > 0 and len(risk) > 0
    # Goods by normalized name and expected week, exactly what core and the risk scores say.
    ours = flying.set_index(["goods", "week_start"])[
        ["orders", "quantity", "declared_value_zar"]
    ].sort_index()
    theirs = expected.set_index(["goods", "week_start"]).sort_index()
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False, check_exact=False, rtol=1e-9)
    assert inbound_meta["units_in_flight"] == pytest.approx(expected["quantity"].sum())
    assert "| goods | units in flight |" in inbound_meta["top_goods"]
    # The model's range: p10 <= expected <= p90 for every order and every row, and a real range.
    assert (risk["expected_low_at"] <= risk["expected_delivery_at"]).all()
    assert (risk["expected_delivery_at"] <= risk["expected_high_at"]).all()
    assert (flying["expected_low_at"] <= flying["expected_at"]).all()
    assert (flying["expected_at"] <= flying["expected_high_at"]).all()
    assert (flying["expected_high_at"] > flying["expected_low_at"]).mean() > 0.5
    # Every date is in the week the row says.
    sast = flying["expected_at"].dt.tz_convert("Africa/Johannesburg")
    assert (sast.dt.date - flying["week_start"]).map(lambda d: 0 <= d.days <= 6).all()
    # Arrived this week: goods of orders delivered in the current ISO week (SAST).
    arrived = inbound[inbound["state"] == "arrived"].set_index("goods")["quantity"].sort_index()
    pd.testing.assert_series_equal(
        arrived, arrived_expected.set_index("goods")["quantity"].sort_index(), check_dtype=False
    )

    # Solo's stock list: the goods with most in flight (none on hand, then plenty), one that
    # is not in flight, one that does not sell.
    totals = flying.groupby("goods")["quantity"].sum().sort_values(ascending=False)
    first_p90 = flying.groupby("goods")["expected_high_at"].min()
    now = pd.Timestamp.now(tz="UTC")
    top = next(g for g in totals.index if first_p90[g] > now + pd.Timedelta(days=1))
    name = flying.loc[flying["goods"] == top, "goods_name"].iloc[0]
    today = today_sast().isoformat()
    csv = tmp_path / "stock.csv"
    csv.write_text(
        "goods,on_hand,daily_sales,as_of\n"
        f"  {name.upper()} ,0,2,{today}\n"
        f"Garden gnome,30,4,{today}\n"
        f"Spare buttons,12,0,{today}\n"
    )
    imported = stock_import(pg_url, csv)
    assert imported.exit_code == 0, imported.output
    cover_run = run(running, pg_url, instance, ALL, selection=AssetSelection.assets("stock_cover"))
    assert cover_run.success
    assert metadata_of(cover_run, "stock_cover")["items"] == 3
    with stock_store.connect() as connection:
        cover = pd.read_sql_query("SELECT * FROM analytics.stock_cover", connection).set_index("goods")
    # Nothing on hand: out at once, a gap until the first of its goods in flight arrive (p90).
    empty = cover.loc[top]
    assert empty["on_hand_now"] == 0 and empty["days_of_cover_p90"] == 0
    assert empty["stockout_risk"] and empty["status"] == "stockout_gap"
    assert empty["next_arrival_at_p90"] == first_p90[top]
    assert empty["inbound_quantity"] == pytest.approx(totals[top])
    # Not in flight: 30 units at 4 a day last 7.5 days; nothing comes, and goods ordered now
    # (10 business days, the promise) would arrive after it runs out: a stock-out risk.
    gnome = cover.loc["garden gnome"]
    assert gnome["days_of_cover"] == pytest.approx(7.5) and gnome["days_of_cover_p90"] == pytest.approx(7.5)
    assert gnome["stockout_risk"] and gnome["status"] == "no_inbound"
    assert gnome["runs_out_at"] - gnome["as_of"] == pd.Timedelta(days=7.5)
    buttons = cover.loc["spare buttons"]
    assert (
        buttons["status"] == "no_sales" and pd.isna(buttons["days_of_cover"]) and not buttons["stockout_risk"]
    )

    # Plenty on hand: every unit in flight arrives before it runs out, so all of it counts.
    csv.write_text(f"goods,on_hand,daily_sales,as_of\n{name},100000,1,{today}\n")
    assert stock_import(pg_url, csv).exit_code == 0
    assert run(running, pg_url, instance, ALL, selection=AssetSelection.assets("stock_cover")).success
    with stock_store.connect() as connection:
        cover = pd.read_sql_query("SELECT * FROM analytics.stock_cover", connection).set_index("goods")
    assert list(cover.index) == [top]  # the import replaced the whole list
    assert cover.loc[top, "days_of_cover"] == pytest.approx(100_000 + totals[top])
    assert cover.loc[top, "days_of_cover_p90"] == pytest.approx(100_000 + totals[top])
    assert cover.loc[top, "status"] == "inbound_in_time" and not cover.loc[top, "stockout_risk"]


def test_a_young_world_without_a_model_dates_goods_by_their_promise_and_never_fails(
    start_sandbox: SandboxFactory, pg_url: str, instance: DagsterInstance, stock_store: sa.Engine
) -> None:
    running = start_sandbox(orders=200, history_days=2)
    result = run(running, pg_url, instance, ALL)
    assert result.success
    assert metadata_of(result, "delay_model")["trained"] is False
    inbound_meta = metadata_of(result, "inbound_stock")
    assert "dated by their promise" in inbound_meta["note"]
    assert "buffalo stock import" in metadata_of(result, "stock_cover")["note"]
    with stock_store.connect() as connection:
        inbound = pd.read_sql_query("SELECT * FROM analytics.inbound_stock", connection)
        expected = pd.read_sql_query(IN_FLIGHT_SQL, connection)
    flying = inbound[inbound["state"] == "in_flight"]
    assert flying["quantity"].sum() == pytest.approx(expected["quantity"].sum()) and len(flying) > 0
    # Every order is unscored: each row counts all its orders so, and a promise has no range
    # around it: the row's latest promise is also its high end.
    assert (flying["unscored_orders"] == flying["orders"]).all()
    assert (flying["expected_high_at"] == flying["expected_at"]).all()
    assert (flying["expected_low_at"] <= flying["expected_at"]).all()


def test_the_declared_stock_tables_have_the_columns_the_stock_core_produces() -> None:
    assert tuple(c.name for c in tables.inbound_stock.columns) == INBOUND_COLUMNS
    assert tuple(c.name for c in tables.stock_cover.columns) == STOCK_COVER_COLUMNS


def test_the_late_end_of_the_range_counts_validation_orders_still_travelling() -> None:
    # Validation moments in customs, all predicted to arrive in 1 day: 80 orders delivered 1
    # day later, 20 still travelling 10 days on (their remaining days are the lower bound the
    # training uses). The range must not forget the slow ones just because they have not arrived.
    stage = float(STAGES.index("customs"))
    remaining = np.array([1.0] * 80 + [10.0] * 20)
    low, high = range_offsets(np.full(100, np.log1p(1.0)), remaining, np.full(100, stage))[int(stage)]
    assert low == pytest.approx(0.0)
    assert high == pytest.approx(np.log1p(10.0) - np.log1p(1.0))  # 10 days, not 1


def test_stock_cover_counts_what_arrives_before_the_shelf_is_empty_by_hand() -> None:
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # a Monday, 12:00 SAST

    def at(days: float) -> pd.Timestamp:
        return pd.Timestamp(now + timedelta(days=days))

    # Phone cases: 50 in the week of day 4 (p90 day 6), 30 in the week of day 20 (p90 day 25).
    inbound = pd.DataFrame(
        {
            "goods": ["phone case", "phone case", "phone case"],
            "state": ["in_flight", "in_flight", "arrived"],
            "quantity": [50.0, 30.0, 999.0],
            "expected_at": [at(4), at(20), pd.NaT],
            "expected_high_at": [at(6), at(25), pd.NaT],
        }
    )
    levels = pd.DataFrame(
        {
            "goods": ["phone case", "phone case 2"],
            "goods_name": ["Phone case", "Phone case 2"],
            "on_hand": [120.0, 5.0],
            "daily_sales": [10.0, 1.0],
            # Counted at the end of Saturday 28 November: 1.5 days before now -> 15 sold since.
            "as_of": [date(2026, 11, 28), date(2026, 11, 28)],
        }
    )
    cover = stock_cover(levels, inbound, now).set_index("goods")
    case = cover.loc["phone case"]
    # 120 - 15 = 105 now: 10.5 days. Day 4 <= 10.5: +50 -> 15.5 days. Day 20 > 15.5: out at 15.5.
    assert case["on_hand_now"] == pytest.approx(105)
    assert case["inbound_quantity"] == 80  # "arrived" rows are on the shelf already, not in the air
    assert case["days_of_cover"] == pytest.approx(15.5)
    assert case["runs_out_at"] == at(15.5)
    # Pessimistic: day 6 <= 10.5: 15.5 days; day 25 > 15.5: empty for 9.5 days before it.
    assert case["days_of_cover_p90"] == pytest.approx(15.5)
    assert case["next_arrival_at_p90"] == at(25)
    assert case["gap_days_p90"] == pytest.approx(9.5)
    assert case["stockout_risk"] and case["status"] == "stockout_gap"
    # 5 - 1.5 = 3.5 days, nothing in flight under this name.
    other = cover.loc["phone case 2"]
    assert other["days_of_cover"] == pytest.approx(3.5) and other["status"] == "no_inbound"

    # If the second lot came by day 14 at the latest, both lots land in time: 105 + 80 units.
    inbound.loc[1, ["expected_at", "expected_high_at"]] = [at(12), at(14)]
    later = stock_cover(levels, inbound, now).set_index("goods").loc["phone case"]
    assert later["days_of_cover"] == pytest.approx(18.5) and later["days_of_cover_p90"] == pytest.approx(18.5)
    assert not later["stockout_risk"] and later["status"] == "inbound_in_time"

    # Nothing more in the air and a reorder takes 14 days: whatever runs out before then is at
    # risk (3.5 days of phone case 2), what lasts longer is not (18.5 days of phone cases).
    reordered = stock_cover(levels, inbound, now, reorder_days=14).set_index("goods")
    assert reordered.loc["phone case 2", "stockout_risk"]
    assert not reordered.loc["phone case", "stockout_risk"]
    # A century or more of cover is "never": no date (a date that far out would be nonsense).
    levels.loc[1, "daily_sales"] = 1e-9
    far = stock_cover(levels, inbound, now).set_index("goods").loc["phone case 2"]
    assert far["days_of_cover"] > 36_500 and pd.isna(far["runs_out_at"]) and not far["stockout_risk"]


def test_a_stock_file_is_read_as_the_readme_describes_it() -> None:
    today = date(2026, 11, 30)
    # Case and spaces in the header are ignored, also runs of them.
    parsed = parse_stock_levels(" Goods , On  Hand ,DAILY SALES,as_of\nDrone,2,0.5,2026-11-29\n", today)
    assert parsed[["goods", "on_hand", "daily_sales"]].to_dict("records") == [
        {"goods": "drone", "on_hand": 2.0, "daily_sales": 0.5}
    ]
    # Only YYYY-MM-DD dates; no number too large to mean anything; never an empty list.
    with pytest.raises(StockFileError) as bad:
        parse_stock_levels(
            f"goods,on_hand,daily_sales,as_of\nDrone,1,1,20261129\nPhone case,{'9' * 400},1,2026-11-29\n",
            today,
        )
    said = str(bad.value)
    assert "line 2, column as_of: '20261129' is not a date (YYYY-MM-DD)" in said
    assert "line 3, column on_hand: '99999999999999999...' is too large" in said
    with pytest.raises(StockFileError, match="no stock rows after the header"):
        parse_stock_levels("goods,on_hand,daily_sales,as_of\n\n", today)


def test_goods_are_grouped_by_name_ignoring_case_and_spacing_and_dated_by_the_model() -> None:
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    items = pd.DataFrame(
        {
            "order_id": ["1", "2", "2", "3"],
            "description": ["Phone  case", " phone case", "Ｄｒｏｎｅ", "PHONE CASE"],
            "quantity": [2, 3, 1, 5],
            "declared_value": [10.0, 20.0, 900.0, 1.0],
        }
    )
    status = pd.DataFrame(
        {
            "order_id": ["1", "2", "3"],
            "stage": ["customs", "processing", "delivered"],
            "promised_delivery_at": pd.to_datetime(["2026-12-05", "2026-12-16", "2026-11-27"], utc=True),
            "delivered_at": pd.to_datetime([None, None, "2026-11-30T08:00Z"], utc=True),
        }
    )
    risk = pd.DataFrame(
        {
            "order_id": ["1"],
            "expected_delivery_at": pd.to_datetime(["2026-12-08T12:00Z"], utc=True),
            "expected_low_at": pd.to_datetime(["2026-12-03T12:00Z"], utc=True),
            "expected_high_at": pd.to_datetime(["2026-12-11T12:00Z"], utc=True),
        }
    )
    frame = inbound_stock(items, status, risk, now)
    rows = {(r.state, r.goods, str(r.week_start)): r for r in frame.itertuples()}
    assert goods_key("  Phone\tCASE ") == "phone case" and goods_key("Ｄｒｏｎｅ") == "drone"
    scored = rows[("in_flight", "phone case", "2026-12-07")]  # order 1: expected Tuesday 8 December
    assert (scored.quantity, scored.declared_value_zar, scored.unscored_orders) == (2, 20.0, 0)
    assert scored.expected_low_at < scored.expected_at < scored.expected_high_at
    unscored = rows[("in_flight", "phone case", "2026-12-14")]  # order 2: no score, its promise
    assert (unscored.quantity, unscored.declared_value_zar, unscored.unscored_orders) == (3, 60.0, 1)
    assert rows[("in_flight", "drone", "2026-12-14")].quantity == 1
    arrived = rows[("arrived", "phone case", "2026-11-30")]  # order 3, delivered this Monday
    assert (arrived.quantity, arrived.orders) == (5, 1)
    assert len(frame) == 4


def test_stock_import_loads_a_good_file_and_a_new_file_replaces_the_list(
    pg_url: str, stock_store: sa.Engine, tmp_path: Path
) -> None:
    today = today_sast().isoformat()
    first = tmp_path / "stock-monday.csv"
    # Header in another order and case, a BOM as Excel writes it, a blank line, decimals.
    first.write_text(
        "\ufeffGoods,Daily Sales,On Hand,As Of\n"
        f"Phone case,3.5,120,{today}\n"
        "\n"
        f'"Drone, large",0.25,4,2026-11-01\n',
        encoding="utf-8",
    )
    result = stock_import(pg_url, first)
    assert result.exit_code == 0, result.output
    assert "imported 2 stock levels from stock-monday.csv" in result.output
    assert "replacing 0 earlier rows" in result.output
    assert stock_rows(stock_store) == [
        ("drone, large", "Drone, large", 4.0, 0.25, date(2026, 11, 1), 4),
        ("phone case", "Phone case", 120.0, 3.5, date.fromisoformat(today), 2),
    ]
    second = tmp_path / "stock-tuesday.csv"
    second.write_text(f"goods,on_hand,daily_sales,as_of\nPHONE  CASE,80,4,{today}\n")
    result = stock_import(pg_url, second)
    assert result.exit_code == 0, result.output
    assert "imported 1 stock levels" in result.output and "replacing 2 earlier rows" in result.output
    assert stock_rows(stock_store) == [("phone case", "PHONE  CASE", 80.0, 4.0, date.fromisoformat(today), 2)]


def test_a_stock_file_with_bad_rows_names_each_by_line_and_column_and_loads_nothing(
    pg_url: str, stock_store: sa.Engine, tmp_path: Path
) -> None:
    today = today_sast()
    good = tmp_path / "good.csv"
    good.write_text(f"goods,on_hand,daily_sales,as_of\nPhone case,10,1,{today}\nDrone,2,0.5,{today}\n")
    assert stock_import(pg_url, good).exit_code == 0
    earlier = stock_rows(stock_store)
    tomorrow = today + timedelta(days=1)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "goods,on_hand,daily_sales,as_of\n"
        f"Laptop stand,5,1,{today}\n"  # line 2: fine
        f"Smart watch,abc,1,{today}\n"  # line 3
        f"Kitchen scale,-4,1,{today}\n"  # line 4
        "Drone,1,1,30/11/2026\n"  # line 5
        f"  laptop   STAND ,1,1,{today}\n"  # line 6: line 2's goods again
        f",1,1,{today}\n"  # line 7
        f"Baby clothes,1,,{tomorrow}\n"  # line 8: two problems
        "Running shoes,1,1\n"  # line 9
    )
    result = stock_import(pg_url, bad)
    assert result.exit_code == 1
    output = result.output
    assert "bad.csv: 8 problem(s), nothing imported (ops.stock_levels keeps its 2 earlier rows)" in output
    for expected in (
        "line 3, column on_hand: 'abc' is not a number",
        "line 4, column on_hand: '-4' is not a number of 0 or more",
        "line 5, column as_of: '30/11/2026' is not a date (YYYY-MM-DD)",
        "line 6, column goods: 'laptop   STAND' already on line 2",
        "line 7, column goods: missing",
        "line 8, column daily_sales: missing",
        f"line 8, column as_of: {tomorrow.isoformat()} is after today",
        "line 9: 3 values, the header has 4",
    ):
        assert expected in output, output
    assert "line 2" not in output.replace("already on line 2", "")
    assert stock_rows(stock_store) == earlier  # nothing loaded, the earlier list kept

    wrong_header = tmp_path / "header.csv"
    wrong_header.write_text(f"goods,onhand,daily_sales,as_of\nDrone,1,1,{today}\n")
    result = stock_import(pg_url, wrong_header)
    assert result.exit_code == 1
    assert "line 1: header columns missing on_hand; unknown 'onhand'" in result.output
    assert stock_rows(stock_store) == earlier
