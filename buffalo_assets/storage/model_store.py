"""The delay models in `ops.delay_models`: every one trained, its verdict, and the one champion.

A row is written once per training, with the gate's verdict in `status` and `note`. A
promotion is one transaction: the old champion becomes `retired` and the new row goes in as
`champion`, so there is never a moment with two champions (a unique index holds that too)
or, once there has been one, with none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from buffalo_assets.storage.tables import delay_models

# Trainings that hold the next one back until BUFFALO_MODEL_RETRAIN_HOURS have passed: a model
# was fitted and judged (or could not be judged). `untrained` (too little history) does not:
# the next run tries again as soon as there may be enough.
TRAININGS = ("champion", "retired", "rejected", "not_judged")
_COLUMNS = (
    "model_version, trained_at, model, threshold, training_rows, metrics, note, run_id, status, as_of, "
    "promoted_at, retired_at, feature_columns, features_hash, sklearn_version, numpy_version, "
    "training_from, training_until, promise_business_days, false_alarm_cost, trained_because"
)
# What a row records about how its model was made (ops.delay_models' registry columns).
REGISTRY: tuple[str, ...] = (
    "feature_columns",
    "features_hash",
    "sklearn_version",
    "numpy_version",
    "training_from",
    "training_until",
    "promise_business_days",
    "false_alarm_cost",
    "trained_because",
)


@dataclass(frozen=True)
class ModelRow:
    model_version: str
    trained_at: datetime
    model: bytes | None
    threshold: float | None
    training_rows: int
    metrics: dict[str, Any]
    note: str | None
    run_id: str | None
    status: str
    as_of: datetime | None
    promoted_at: datetime | None
    retired_at: datetime | None
    feature_columns: list[str] | None = None
    features_hash: str | None = None
    sklearn_version: str | None = None
    numpy_version: str | None = None
    training_from: datetime | None = None
    training_until: datetime | None = None
    promise_business_days: int | None = None
    false_alarm_cost: float | None = None
    trained_because: str | None = None


def _row(found: sa.Row[Any] | None) -> ModelRow | None:
    if found is None:
        return None
    values = found._asdict()
    values["model"] = bytes(values["model"]) if values["model"] is not None else None
    values["metrics"] = values["metrics"] or {}
    return ModelRow(**values)


def champion(connection: sa.Connection) -> ModelRow | None:
    """The model that scores now, if there is one."""
    return _row(
        connection.execute(
            sa.text(f"SELECT {_COLUMNS} FROM ops.delay_models WHERE status = 'champion'")
        ).first()
    )


def newest(
    connection: sa.Connection, *, statuses: tuple[str, ...] | None = None, run_id: str | None = None
) -> ModelRow | None:
    """The newest row (among `statuses`; of `run_id`, when given)."""
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if statuses is not None:
        conditions.append("status = ANY(:statuses)")
        params["statuses"] = list(statuses)
    if run_id is not None:
        conditions.append("run_id = :run_id")
        params["run_id"] = run_id
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return _row(
        connection.execute(
            sa.text(
                f"SELECT {_COLUMNS} FROM ops.delay_models {where} "
                "ORDER BY trained_at DESC, model_version DESC LIMIT 1"
            ),
            params,
        ).first()
    )


def record(
    engine: sa.Engine,
    *,
    model_version: str,
    trained_at: datetime,
    status: str,
    note: str,
    metrics: dict[str, Any],
    run_id: str | None,
    model: bytes | None = None,
    threshold: float | None = None,
    training_rows: int = 0,
    as_of: datetime | None = None,
    replaces: str | None = None,
    registry: Mapping[str, Any] | None = None,
) -> None:
    """Store one training's row; a `champion` retires the previous champion in the same transaction.

    `replaces` is the champion the new one was judged against (None: there was none). If
    another run promoted a different champion meanwhile, nothing is written and
    `ChampionChanged` says so: the new model was never compared with that one.
    `registry` fills the registry columns (`REGISTRY`); a training serves every open
    retraining request in the same transaction.
    """
    unknown = set(registry or {}) - set(REGISTRY)
    if unknown:
        raise ValueError(f"not registry columns of ops.delay_models: {sorted(unknown)}")
    row = {
        "model_version": model_version,
        "trained_at": trained_at,
        "model": model,
        "threshold": threshold,
        "training_rows": training_rows,
        "metrics": jsonable(metrics),
        "note": note,
        "run_id": run_id,
        "status": status,
        "as_of": as_of,
        "promoted_at": trained_at if status == "champion" else None,
        "retired_at": None,
        **dict(registry or {}),
    }
    with engine.begin() as connection:
        if status == "champion":
            # Two promotions at once take turns instead of tripping the one-champion index.
            connection.execute(sa.text("LOCK TABLE ops.delay_models IN SHARE ROW EXCLUSIVE MODE"))
            now_champion = connection.execute(
                sa.text("SELECT model_version FROM ops.delay_models WHERE status = 'champion'")
            ).scalar()
            if now_champion != replaces:
                raise ChampionChanged(
                    f"{model_version} was judged against champion {replaces or 'none'}, but {now_champion} "
                    "was promoted by another run meanwhile: nothing stored; train again to judge it "
                    "against that one"
                )
            connection.execute(
                sa.text(
                    "UPDATE ops.delay_models SET status = 'retired', retired_at = :now "
                    "WHERE status = 'champion'"
                ),
                {"now": trained_at},
            )
        connection.execute(sa.insert(delay_models).values(**row))
        if status != "untrained":
            connection.execute(
                sa.text("UPDATE ops.delay_retrain_requests SET served_by = :version WHERE served_by IS NULL"),
                {"version": model_version},
            )


class ChampionChanged(RuntimeError):
    """Another run promoted a champion while this challenger was being judged."""


def jsonable(value: Any) -> Any:
    """JSON for jsonb: NaN and infinities become null, numpy numbers plain numbers."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
