"""Inbound stock and stock cover: goods in the air, when they land, and whether shelves last.

* `inbound_stock`: the declared goods of orders still travelling, by goods name (normalized
  with `goods_key`: Unicode NFKC, case and spacing) and the SAST ISO week the delay model
  expects them in, with quantity, declared value and the model's 10th-90th percentile
  range; plus what was delivered in the current ISO week (`state` "arrived").
* `stock_cover`: for each item of Solo's own stock list (`ops.stock_levels`), the days until
  it runs out counting what arrives before then, once with the expected dates and once with
  the late end of the range (p90), and whether it runs out before goods still in the air
  arrive (a stock-out gap).
* `parse_stock_levels`: the CSV that `buffalo stock import` loads, validated line by line.

Time stamps are tz-aware UTC in and out; weeks are ISO weeks (Monday) of South African time.
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from buffalo_assets.analytics._time import SAST, as_utc, period_start
from buffalo_assets.analytics.stages import TERMINAL_STAGES

if TYPE_CHECKING:
    import pandas as pd
else:
    from buffalo_assets.lazy import pd

INBOUND_COLUMNS: tuple[str, ...] = (
    "goods",
    "goods_name",
    "state",
    "week_start",
    "orders",
    "quantity",
    "declared_value_zar",
    "expected_low_at",
    "expected_at",
    "expected_high_at",
    "unscored_orders",
    "as_of",
)
STOCK_COVER_COLUMNS: tuple[str, ...] = (
    "goods",
    "goods_name",
    "on_hand",
    "daily_sales",
    "stock_as_of",
    "on_hand_now",
    "inbound_quantity",
    "days_of_cover",
    "runs_out_at",
    "days_of_cover_p90",
    "runs_out_at_p90",
    "next_arrival_at_p90",
    "gap_days_p90",
    "stockout_risk",
    "status",
    "as_of",
)
STOCK_LEVEL_COLUMNS: tuple[str, ...] = ("goods", "on_hand", "daily_sales", "as_of")
IN_FLIGHT, ARRIVED = "in_flight", "arrived"
UNNAMED = "(no description)"


def goods_key(name: object) -> str:
    """The name goods are grouped by: NFKC, case-folded, runs of spaces as one, trimmed."""
    if name is None or (isinstance(name, float) and math.isnan(name)):
        return UNNAMED
    text = " ".join(unicodedata.normalize("NFKC", str(name)).casefold().split())
    return text or UNNAMED


def _display_names(keys: pd.Series, names: pd.Series) -> dict[str, str]:
    """Per key, its most common spelling (ties: the first in sort order)."""
    spelled = pd.DataFrame(
        {"goods": keys, "name": names.fillna(UNNAMED).astype(str).map(lambda n: " ".join(n.split()))}
    )
    spelled.loc[spelled["name"] == "", "name"] = UNNAMED
    counts = spelled.groupby(["goods", "name"]).size().reset_index(name="n")
    first = counts.sort_values(["goods", "n", "name"], ascending=[True, False, True]).drop_duplicates("goods")
    return dict(zip(first["goods"], first["name"], strict=True))


def week_start(moments: pd.Series) -> pd.Series:
    """The Monday (SAST date) of each moment's ISO week."""
    return period_start(moments, "week")


def inbound_stock(
    items: pd.DataFrame, status_now: pd.DataFrame, risk: pd.DataFrame, as_of: datetime
) -> pd.DataFrame:
    """`INBOUND_COLUMNS` rows: goods in flight by expected week, and goods arrived this week.

    `items`: `order_id`, `description`, `quantity`, `declared_value` (per unit) from
    `core.order_items`; `status_now`: `order_id`, `stage`, `promised_delivery_at`,
    `delivered_at`; `risk`: `order_id`, `expected_delivery_at`, `expected_low_at`,
    `expected_high_at` from `analytics.order_delay_risk`. An order is in flight when its
    stage is not final (delivered, returned, cancelled, lost). One the model did not score
    (no model yet) is dated by its promise, with no range, and counted in `unscored_orders`.
    In-flight rows: `expected_low_at` is the earliest 10th percentile of the row's orders,
    `expected_at` the latest median (all its units are expected by then), `expected_high_at`
    the latest 90th percentile. "arrived" rows: goods of orders delivered in the ISO week
    of `as_of`, `week_start` that week's Monday, no dates.
    """
    now = as_utc(as_of)
    lines = items[["order_id", "description", "quantity", "declared_value"]].copy()
    lines["order_id"] = lines["order_id"].astype(str)
    lines["goods"] = lines["description"].map(goods_key)
    lines["quantity"] = pd.to_numeric(lines["quantity"], errors="coerce").fillna(0).astype("float64")
    unit = pd.to_numeric(lines["declared_value"], errors="coerce").astype("float64")
    lines["value"] = unit * lines["quantity"]
    names = _display_names(lines["goods"], lines["description"])

    status = status_now[["order_id", "stage", "promised_delivery_at", "delivered_at"]].copy()
    status["order_id"] = status["order_id"].astype(str)
    in_flight = status[~status["stage"].isin(TERMINAL_STAGES)].copy()
    dated = risk[["order_id", "expected_delivery_at", "expected_low_at", "expected_high_at"]].copy()
    dated["order_id"] = dated["order_id"].astype(str)
    in_flight = in_flight.merge(dated, on="order_id", how="left")
    for column in ("promised_delivery_at", "expected_delivery_at", "expected_low_at", "expected_high_at"):
        in_flight[column] = pd.to_datetime(in_flight[column], utc=True)
    in_flight["unscored"] = in_flight["expected_delivery_at"].isna()
    # Unscored: the promise is all there is to go by; never a date before now.
    expected = in_flight["expected_delivery_at"].fillna(in_flight["promised_delivery_at"])
    in_flight["expected"] = expected.where(expected.isna() | (expected >= now), now)
    # A score older than now may lie before it: the range still brackets the date used.
    low = in_flight["expected_low_at"].fillna(in_flight["expected"])
    high = in_flight["expected_high_at"].fillna(in_flight["expected"])
    in_flight["low"] = low.where(low <= in_flight["expected"], in_flight["expected"])
    in_flight["high"] = high.where(high >= in_flight["expected"], in_flight["expected"])
    in_flight = in_flight[in_flight["expected"].notna()]
    in_flight["week_start"] = week_start(in_flight["expected"])

    flying = lines.merge(
        in_flight[["order_id", "week_start", "low", "expected", "high", "unscored"]], on="order_id"
    )
    grouped = flying.groupby(["goods", "week_start"], sort=True)
    inbound = pd.DataFrame(
        {
            "orders": grouped["order_id"].nunique(),
            "quantity": grouped["quantity"].sum(),
            "declared_value_zar": grouped["value"].sum(min_count=1),
            "expected_low_at": grouped["low"].min(),
            "expected_at": grouped["expected"].max(),
            "expected_high_at": grouped["high"].max(),
            "unscored_orders": flying[flying["unscored"]]
            .groupby(["goods", "week_start"])["order_id"]
            .nunique(),
        }
    ).reset_index()
    inbound["state"] = IN_FLIGHT

    this_week = week_start(pd.Series([now])).iloc[0]
    delivered = status[status["delivered_at"].notna()].copy()
    delivered = delivered[week_start(delivered["delivered_at"]).to_numpy() == this_week]
    landed = lines[lines["order_id"].isin(delivered["order_id"])]
    by_goods = landed.groupby("goods", sort=True)
    arrived = pd.DataFrame(
        {
            "orders": by_goods["order_id"].nunique(),
            "quantity": by_goods["quantity"].sum(),
            "declared_value_zar": by_goods["value"].sum(min_count=1),
        }
    ).reset_index()
    arrived["state"] = ARRIVED
    arrived["week_start"] = this_week

    frame = pd.concat([inbound, arrived], ignore_index=True) if len(arrived) else inbound
    frame["goods_name"] = frame["goods"].map(names)
    frame["unscored_orders"] = frame["unscored_orders"].fillna(0).astype("int64")
    frame["orders"] = frame["orders"].astype("int64")
    frame["as_of"] = now
    for column in ("expected_low_at", "expected_at", "expected_high_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame.reindex(columns=list(INBOUND_COLUMNS)).sort_values(
        ["state", "goods", "week_start"], ignore_index=True
    )


# -- stock cover -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arrival:
    day: float  # days from now, never before now
    quantity: float
    at: pd.Timestamp


def _cover(on_hand: float, daily_sales: float, arrivals: list[_Arrival]) -> tuple[float, _Arrival | None]:
    """Days until stock runs out, and the first arrival after that (None: none).

    `arrivals` are sorted by day. Stock falls by `daily_sales` a day; an arrival on or
    before the day it runs out refills it.
    """
    out = on_hand / daily_sales
    for arrival in arrivals:
        if arrival.day > out:
            return out, arrival
        out += arrival.quantity / daily_sales
    return out, None


MAX_COVER_DAYS = 36_500.0


def _runs_out_at(now: pd.Timestamp, days: float) -> pd.Timestamp | None:
    return (now + days * pd.Timedelta(days=1)).round("s") if days <= MAX_COVER_DAYS else None


def _arrivals(inbound: pd.DataFrame, column: str, now: pd.Timestamp) -> list[_Arrival]:
    """Inbound rows arriving at `column` (one already due counts as arriving now), earliest first."""
    stamps = [max(pd.Timestamp(at), now) for at in pd.to_datetime(inbound[column], utc=True)]
    quantities = inbound["quantity"].to_numpy(dtype="float64")
    found = [
        _Arrival((at - now) / pd.Timedelta(days=1), float(q), at)
        for at, q in zip(stamps, quantities, strict=True)
    ]
    return sorted(found, key=lambda arrival: arrival.day)


def stock_cover(
    stock_levels: pd.DataFrame, inbound: pd.DataFrame, as_of: datetime, *, reorder_days: float = 0.0
) -> pd.DataFrame:
    """`STOCK_COVER_COLUMNS` rows, one per item of `stock_levels`.

    `stock_levels`: `goods` (normalized key), `goods_name`, `on_hand`, `daily_sales`, `as_of`
    (the SAST date of the count, taken at the end of that day) as in `ops.stock_levels`;
    `inbound`: `inbound_stock` rows (only `state` in_flight count), matched on `goods`.

    * `on_hand_now`: the count less `daily_sales` for every day since the end of its date.
    * `days_of_cover` / `runs_out_at`: when it runs out from now, counting every inbound row
      that arrives (at its `expected_at`: when all of its units are expected) on or before
      the day stock would run out; each adds `quantity / daily_sales` days.
    * `days_of_cover_p90` / `runs_out_at_p90`: the same with rows arriving at
      `expected_high_at` (the late end of the range): the pessimistic view.
    * `stockout_risk`: in the pessimistic view it runs out before goods still in the air
      arrive (`next_arrival_at_p90`), leaving `gap_days_p90` days with nothing to sell; or,
      with nothing more in the air, it runs out within `reorder_days` (how long goods ordered
      now take to arrive: the delivery promise), so a new order could not arrive in time.
    * `runs_out_at*` stay empty beyond `MAX_COVER_DAYS` (a century: "never", for practical
      purposes), where a date would be meaningless.
    * `status`: `no_sales` (daily_sales 0: never runs out), `stockout_gap` (the risk),
      `inbound_in_time` (everything in the air arrives before it runs out), `no_inbound`.
    """
    now = as_utc(as_of).floor("s")
    flying = inbound[inbound["state"] == IN_FLIGHT]
    rows: list[dict[str, Any]] = []
    for item in stock_levels.to_dict("records"):
        mine = flying[flying["goods"] == item["goods"]]
        on_hand, sales = float(item["on_hand"]), float(item["daily_sales"])
        counted = pd.Timestamp(item["as_of"], tz=SAST) + pd.Timedelta(days=1)  # end of the count's day
        elapsed = max(0.0, (now - counted) / pd.Timedelta(days=1))
        left = max(0.0, on_hand - sales * elapsed)
        row: dict[str, Any] = {
            "goods": item["goods"],
            "goods_name": item["goods_name"],
            "on_hand": on_hand,
            "daily_sales": sales,
            "stock_as_of": item["as_of"],
            "on_hand_now": left,
            "inbound_quantity": float(mine["quantity"].sum()),
            "stockout_risk": False,
            "as_of": now,
        }
        if sales <= 0:
            rows.append(row | {"status": "no_sales"})
            continue

        expected_out, _ = _cover(left, sales, _arrivals(mine, "expected_at", now))
        p90_out, next_p90 = _cover(left, sales, _arrivals(mine, "expected_high_at", now))
        row |= {
            "days_of_cover": expected_out,
            "runs_out_at": _runs_out_at(now, expected_out),
            "days_of_cover_p90": p90_out,
            "runs_out_at_p90": _runs_out_at(now, p90_out),
        }
        if next_p90 is not None:
            row |= {
                "next_arrival_at_p90": next_p90.at,
                "gap_days_p90": next_p90.day - p90_out,
                "stockout_risk": True,
                "status": "stockout_gap",
            }
        else:
            row["status"] = "inbound_in_time" if len(mine) else "no_inbound"
            row["stockout_risk"] = p90_out < reorder_days
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(STOCK_COVER_COLUMNS))
    for column in ("runs_out_at", "runs_out_at_p90", "next_arrival_at_p90", "as_of"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["stockout_risk"] = frame["stockout_risk"].astype(bool)
    return frame.sort_values("goods", ignore_index=True)


# -- the stock CSV ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BadValue:
    """One problem in the stock CSV: where (line, column) and what."""

    line: int
    column: str
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.problem}"


class StockFileError(ValueError):
    """The stock CSV has problems; `problems` names each one by line and column."""

    def __init__(self, problems: list[BadValue]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


MAX_UNITS = 1e12  # more units than any shop holds or sells a day: a broken export
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)$")


def _quantity(text: str, line: int, column: str, problems: list[BadValue]) -> float | None:
    value = text.strip()
    if not value:
        problems.append(BadValue(line, column, "missing (a number of units, 0 or more)"))
        return None
    if not _NUMBER.match(value):
        problems.append(
            BadValue(line, column, f"{value!r} is not a number of 0 or more (use . for decimals)")
        )
        return None
    number = float(value)
    if not math.isfinite(number) or number > MAX_UNITS:
        shown = value if len(value) <= 20 else value[:17] + "..."
        problems.append(BadValue(line, column, f"{shown!r} is too large (at most {MAX_UNITS:,.0f})"))
        return None
    return number


def parse_stock_levels(text: str, today: date, *, source: str = "") -> pd.DataFrame:
    """The rows of a stock CSV as `ops.stock_levels` columns, or `StockFileError` naming every bad value.

    Header (any order, case and spaces ignored): `goods,on_hand,daily_sales,as_of`. Goods
    names are matched to declared goods by `goods_key`; a name may appear once per file.
    `on_hand` and `daily_sales` are numbers >= 0; `as_of` a date (YYYY-MM-DD) not after
    `today`. Blank lines are skipped; line numbers count from the header (line 1).
    """
    problems: list[BadValue] = []
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header: list[str] | None = None
    for header_row in reader:
        if any(cell.strip() for cell in header_row):
            header = ["_".join(cell.lower().split()) for cell in header_row]
            break
    if header is None:
        raise StockFileError(
            [BadValue(1, "", f"empty file: the header {','.join(STOCK_LEVEL_COLUMNS)} is needed")]
        )
    header_line = reader.line_num
    missing = [c for c in STOCK_LEVEL_COLUMNS if c not in header]
    unknown = [c for c in header if c not in STOCK_LEVEL_COLUMNS]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if missing or unknown or repeated:
        said = [f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(repr(c) for c in unknown)}" if unknown else "",
                f"repeated {', '.join(repeated)}" if repeated else ""]  # fmt: skip
        raise StockFileError(
            [
                BadValue(
                    header_line,
                    "",
                    f"header columns {'; '.join(s for s in said if s)} "
                    f"(expected {','.join(STOCK_LEVEL_COLUMNS)})",
                )
            ]  # fmt: skip
        )
    position = {name: header.index(name) for name in STOCK_LEVEL_COLUMNS}
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            problems.append(BadValue(line, "", f"{len(cells)} values, the header has {len(header)}"))
            continue
        name = cells[position["goods"]].strip()
        key = goods_key(name) if name else ""
        if not name:
            problems.append(BadValue(line, "goods", "missing (the goods name as declared on orders)"))
        elif key in seen:
            problems.append(
                BadValue(
                    line,
                    "goods",
                    f"{name!r} already on line {seen[key]} (same name ignoring case and spacing)",
                )
            )
        else:
            seen[key] = line
        on_hand = _quantity(cells[position["on_hand"]], line, "on_hand", problems)
        sales = _quantity(cells[position["daily_sales"]], line, "daily_sales", problems)
        counted_text = cells[position["as_of"]].strip()
        counted: date | None = None
        try:
            if not _DATE.match(counted_text):
                raise ValueError(counted_text)
            counted = date.fromisoformat(counted_text)
        except ValueError:
            problems.append(BadValue(line, "as_of", f"{counted_text!r} is not a date (YYYY-MM-DD)"))
        if counted is not None and counted > today:
            problems.append(
                BadValue(line, "as_of", f"{counted.isoformat()} is after today ({today.isoformat()})")
            )
        rows.append(
            {
                "goods": key,
                "goods_name": name,
                "on_hand": on_hand,
                "daily_sales": sales,
                "as_of": counted,
                "line": line,
                "source": source,
            }  # fmt: skip
        )
    if not rows and not problems:
        # An export that lost its rows must not silently empty the stock list.
        problems.append(
            BadValue(header_line, "", "no stock rows after the header: nothing to import (the list stays)")
        )
    if problems:
        raise StockFileError(problems)
    return pd.DataFrame(
        rows, columns=["goods", "goods_name", "on_hand", "daily_sales", "as_of", "line", "source"]
    )


def today_sast(moment: datetime | None = None) -> date:
    """Today's date in South Africa."""
    return (moment or datetime.now(SAST)).astimezone(SAST).date()
