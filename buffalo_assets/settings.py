"""Every setting of the platform, declared once: name, type, default and meaning.

Settings come from the environment, else from `<project>/.env` (values in the environment
win). Reading them has no side effect: nothing is written to `os.environ`. The settings
table of docs/settings.md and `.env.example` are checked against `Settings` by the tests, and the
deployed stack (`docker-compose.yml`, `deploy/dagster.yaml`) passes every setting whose
`where` is `stack`.

Renamed settings keep their old name for a while (`RENAMED`): a value set by the old name is
used, `buffalo settings` and `buffalo check` warn about it (`renamed_warnings`), and the old
and the new name set to different values is an error naming both (never their values).

Only this module and the CLI's hand-over to Dagster processes (`cli/dev.py`) touch `os.environ`,
and only to read it; the one write is `analytics_as_of`, which sets BUFFALO_ANALYTICS_AS_OF
around in-process runs (the demo's first run, the tests' replayed days).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from buffalo_assets.buffalo.options import DEFAULTS as CLIENT_DEFAULTS
from buffalo_assets.buffalo.options import ClientOptions

# The sandbox the quickstart and tests start when no real API is configured.
SANDBOX_HOST = "127.0.0.1"
SANDBOX_PORT = 8765
SANDBOX_USERNAME = "demo@solo.example"
SANDBOX_PASSWORD = "buffalo-sandbox"  # noqa: S105 - public default of the local simulator
SANDBOX_URL = f"http://{SANDBOX_HOST}:{SANDBOX_PORT}"

ENV_PREFIX = "BUFFALO_"

# Where a setting is read, which decides where the deployed stack must pass it:
#   stack   - the Dagster processes (code server, webserver, daemon, run containers)
#   airflow - the Airflow DAG, in Airflow's own virtualenv (it reads the environment itself)
#   local   - only the `buffalo` command on a workstation
Where = Literal["stack", "airflow", "local"]

# Settings renamed, by their old environment variable: the field that reads it now. The old
# names still work, with a warning, until the next minor release (see CHANGELOG.md).
RENAMED: dict[str, str] = {
    "BUFFALO_ALERT_COOLDOWN_HOURS": "customer_alert_cooldown_hours",
    "BUFFALO_ALERT_MAX_ATTEMPTS": "customer_alert_max_attempts",
    "BUFFALO_ALERT_RETRY_S": "customer_alert_retry_s",
    "BUFFALO_ALERT_TIMEOUT_S": "customer_alert_timeout_s",
    "BUFFALO_ALERT_WEBHOOK": "ops_alert_webhook",
}
# Where the old names' values travel from their source to the validator (not a setting).
_OLD_NAMES_KEY = "__buffalo_old_names__"


class SettingsConflict(Exception):
    """Settings that are each valid but do not go together.

    Not a ValueError on purpose: pydantic would wrap one into a ValidationError that quotes
    every input value, secrets included.
    """


class RenamedSettingConflict(SettingsConflict):
    """A renamed setting is set by its old and its new name, to different values."""


def _setting(default: Any, description: str, *, where: Where = "stack", shown: str | None = None) -> Any:
    """A field with its line in the settings table: `shown` is the default as the table states it."""
    extra: dict[str, Any] = {"where": where}
    if shown is not None:
        extra["shown_default"] = shown
    return Field(default=default, description=description, json_schema_extra=extra)


class Settings(BaseSettings):
    """The platform's settings; the environment variable of `name` is `BUFFALO_NAME`."""

    # Empty values count as unset: compose passes `${VAR:-}` for every optional setting.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", env_file_encoding="utf-8", env_ignore_empty=True
    )

    # -- database ----------------------------------------------------------------------
    pg_url: str | None = _setting(
        None,
        "SQLAlchemy URL of the database, `postgresql+psycopg2://user:pw@host:5432/db` "
        "(`postgres://` and `postgresql://` are accepted). Dagster's own storage uses the same "
        "database. Unset: the embedded server that `buffalo` commands start.",
        shown="embedded server",
    )
    # -- Buffalo API ---------------------------------------------------------------------
    base_url: str | None = _setting(
        None,
        "Buffalo API base URL; production is `https://index.buffaloex.com`. Unset: the local sandbox.",
        shown=f"`{SANDBOX_URL}` (the sandbox)",
    )
    username: str | None = _setting(
        None, "merchant account login", shown="sandbox default when the base URL is unset"
    )
    password: SecretStr | None = _setting(
        None,
        "merchant account password (never logged, never in run config)",
        shown="sandbox default when the base URL is unset",
    )
    concurrency: int = _setting(
        CLIENT_DEFAULTS.concurrency,
        "order-detail requests in flight at once (plus concurrency / 10, rounded up, list pages "
        "while a run lists the order pages beside them)",
    )
    requests_per_second: float = _setting(
        CLIENT_DEFAULTS.requests_per_second,
        "upper bound on the request rate to the API",
        shown="`0` (no bound)",
    )
    verify_tls: bool = _setting(CLIENT_DEFAULTS.verify_tls, "verify the API's TLS certificate")
    ca_bundle: str | None = _setting(None, "CA bundle file for TLS verification", shown="system bundle")
    max_response_bytes: int = _setting(
        CLIENT_DEFAULTS.max_response_bytes, "larger API responses are refused and the order quarantined"
    )
    # -- ingestion -----------------------------------------------------------------------
    full_walk_hours: float = _setting(
        24.0,
        "hours between full walks of the order list; in between, listing stops at the first "
        "page of known ids",
    )
    max_failure_share: float = _setting(
        0.2,
        "`raw_orders` fails when more than this share of orders could not be fetched or stored "
        "(orders Buffalo answers as not existing, re-checks of quarantined gone orders and "
        "payloads already quarantined do not count)",
    )
    max_gone_share: float = _setting(
        0.5,
        "orders Buffalo answers as not existing (the same with a fresh ticket) never fail a run, "
        "unless more than this share of the orders asked in one run does: that is a wrong account "
        "or base URL, not deletions (`1`: never)",
    )
    gone_after_failures: int = _setting(
        3,
        "an order whose detail fails for good (Buffalo says it does not exist, or another 4xx) in "
        "this many runs in a row is quarantined in `ops.gone_orders`: fetched again only by the "
        "re-check, and (a 4xx) no longer counted toward `BUFFALO_MAX_FAILURE_SHARE`",
    )
    gone_recheck_days: float = _setting(
        7.0,
        "days between re-checks of a quarantined gone order; one that answers again leaves quarantine",
        shown="`7`",
    )
    reverify_share: float = _setting(
        0.01,
        "share of final orders (delivered, returned, cancelled, lost) `raw_orders` fetches again "
        "each run, least recently verified first, so a status Buffalo changes later is caught "
        "(at least one order when there are final orders; `0`: none)",
    )
    freshness_hours: float = _setting(1.0, "`raw_orders` and `clean_orders` count as stale when older")
    # -- scheduling ----------------------------------------------------------------------
    orchestrator: Literal["dagster", "airflow"] = _setting(
        "dagster",
        "who schedules ingestion: `dagster` (its `ingest_orders_schedule`) or `airflow` (DAG "
        "`buffalo_orders`); the other side's schedule stays off, manual runs work on both",
    )
    ingest_cron: str = _setting(
        "*/15 * * * *",
        "cron of the ingest schedule, in Africa/Johannesburg time: Dagster's, and the Airflow DAG's "
        "when `BUFFALO_AIRFLOW_SCHEDULE` is unset",
    )
    schedule_enabled: bool | None = _setting(
        None,
        "whether Dagster's schedule starts switched on (only when the orchestrator is `dagster`)",
        shown="on when `BUFFALO_BASE_URL` is set, off on the sandbox default",
    )
    # -- analytics -----------------------------------------------------------------------
    promise_business_days: int = _setting(
        10,
        "the delivery promise analytics measure lateness against: this many South African "
        "business days after the order was created (weekends and public holidays excluded), "
        "because Buffalo's API sends no promised date",
    )
    stuck_days: float = _setting(
        5.0, "an order in flight with no tracking event for this many days counts as stuck", shown="`5`"
    )
    model_retrain_hours: float = _setting(
        24.0,
        "a new delay model (a challenger) is trained when the newest one is older than this; in "
        "between, runs after an ingest only rescore the orders in flight with the champion",
        shown="`24`",
    )
    false_alarm_cost: float = _setting(
        2.0,
        "what one false alarm (an at-risk alert for a parcel that then arrives on time) costs, in "
        "missed late parcels: an order is `at_risk` when its calibrated p_late is at least "
        "cost / (1 + cost), 0.67 by default; the same rule judges the model and the baseline",
        shown="`2`",
    )
    prediction_retention_days: float = _setting(
        400.0,
        "days the prediction history (`analytics.delay_predictions`) and the drift rows are kept; "
        "older rows are deleted when the orders in flight are scored",
        shown="`400`",
    )
    drift_psi: float = _setting(
        0.25,
        "population stability index above which a feature of the orders in flight counts as drifted "
        "from the champion's training rows (0.1: worth a look, 0.25: large); a drift warns and asks "
        "for a retraining",
        shown="`0.25`",
    )
    min_realized_precision: float = _setting(
        0.5,
        "realized precision of the champion's at-risk calls (its newest week with at least 20 judged "
        "calls) below which a retraining is asked for",
        shown="`0.5`",
    )
    analytics_as_of: datetime | None = _setting(
        None,
        "run the analytics as of this moment (ISO 8601 with a zone) instead of now: replaying a past "
        "day, or a sandbox whose clock runs ahead; leave empty in production",
        shown="now",
    )
    # -- customer alerts -----------------------------------------------------------------
    customer_alert_cooldown_hours: float = _setting(
        72.0,
        "an order gets no new delay alert (at_risk, late, stuck) within this many hours of its "
        "previous one; duty_unpaid and delivered_after_delay are exempt",
        shown="`72`",
    )
    customer_alert_webhook: SecretStr | None = _setting(
        None,
        "customer alerts are POSTed here as JSON (Solo's notification service; the URL may embed a "
        "token and is never logged); unset: the sender sensor skips",
    )
    customer_alert_secret: SecretStr | None = _setting(
        None,
        "the key customer alerts are signed with (Standard Webhooks: `whsec_` + base64 of at least "
        "24 random bytes, shared with the receiver, never logged); required once "
        "`BUFFALO_CUSTOMER_ALERT_WEBHOOK` is set: unsigned alerts are never sent",
    )
    customer_alert_max_attempts: int = _setting(
        8, "POSTs of one customer alert before the sender gives up on it (5xx, timeouts)"
    )
    customer_alert_retry_s: float = _setting(
        60.0,
        "wait before retrying a customer alert after its first failed POST, seconds; doubled after "
        "each further failure, at most 6 hours",
        shown="`60`",
    )
    customer_alert_timeout_s: float = _setting(
        10.0,
        "seconds a customer alert POST may take before it counts as failed (and is retried)",
        shown="`10`",
    )
    # -- operations alerts -----------------------------------------------------------------
    ops_alert_webhook: SecretStr | None = _setting(
        None,
        "failed runs (and Airflow tasks that failed without a failed run behind them) are POSTed "
        "here as JSON, for the operations team (the URL often holds a token: masked, never logged "
        "or quoted in an error)",
        shown="unset (logged)",
    )
    dagster_ui_url: str | None = _setting(None, "base URL of the Dagster UI, for links in alerts")
    bi_password: SecretStr | None = _setting(
        None, "password of the BI role `buffalo db grant-bi` creates (without it the role cannot log in)"
    )
    bi_statement_timeout_s: float = _setting(
        120.0,
        "a query of the BI role running longer is cancelled, so a heavy DirectQuery visual cannot "
        "hold up ingestion (`buffalo db grant-bi` sets it on the role; `0`: no limit)",
        shown="`120`",
    )
    bi_connection_limit: int = _setting(
        10, "connections the BI role may hold at once (`buffalo db grant-bi` sets it; `-1`: no limit)"
    )
    # -- Airflow (read by the DAG in Airflow's own virtualenv) -----------------------------
    airflow_schedule: str | None = _setting(
        None,
        "schedule of DAG `buffalo_orders` when the orchestrator is `airflow`: a cron in "
        "Africa/Johannesburg time",
        where="airflow",
        shown="`BUFFALO_INGEST_CRON`, else `*/15 * * * *`",
    )
    airflow_retries: int = _setting(2, "task retries of DAG `buffalo_orders`", where="airflow")
    airflow_retry_delay_s: float = _setting(
        60.0,
        "first retry delay of DAG `buffalo_orders`' tasks, seconds (then exponential, at most 10 minutes)",
        where="airflow",
        shown="`60`",
    )
    airflow_deferrable: bool = _setting(
        True, "wait for Dagster runs in Airflow's triggerer (`false`: in the worker)", where="airflow"
    )
    airflow_poll_interval_s: float = _setting(
        5.0, "seconds between status polls of a Dagster run", where="airflow", shown="`5`"
    )
    airflow_task_timeout_min: int = _setting(
        60, "timeout of each task of DAG `buffalo_orders`, minutes", where="airflow"
    )
    airflow_dagster_conn_id: str = _setting(
        "dagster_default", "Airflow connection of the Dagster webserver the DAG triggers", where="airflow"
    )
    # -- workstation ---------------------------------------------------------------------
    home: Path | None = _setting(
        None,
        "project folder; local state (embedded database, Dagster home) goes to `$BUFFALO_HOME/.buffalo/`",
        where="local",
        shown="nearest folder up with `workspace.yaml`",
    )
    demo_db: str = _setting("buffalo_demo", "database the demo recreates on the server", where="local")

    # The old names of renamed settings this instance was given (see `RENAMED`).
    _old_names_used: tuple[str, ...] = PrivateAttr(default=())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        old_names = _OldNames(settings_cls, env_settings, dotenv_settings)
        return init_settings, env_settings, dotenv_settings, old_names, file_secret_settings

    @model_validator(mode="wrap")
    @classmethod
    def _read_old_names(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """A renamed setting set only by its old name takes that value; set by both, they must agree."""
        old_names: dict[str, str] = {}
        if isinstance(data, dict) and _OLD_NAMES_KEY in data:
            data = dict(data)
            old_names = data.pop(_OLD_NAMES_KEY)
        conflicts = []
        for old, value in old_names.items():
            field, new = RENAMED[old], env_name(RENAMED[old])
            if field not in data:
                data[field] = value
            elif not _same_value(cls.model_fields[field], data[field], value):
                conflicts.append(
                    f"{old} and {new} are both set, to different values ({old} is the old name of "
                    f"{new}): remove {old} and keep the value you want in {new}"
                )
        if conflicts:
            raise RenamedSettingConflict("; ".join(conflicts))
        current = handler(data)
        current._old_names_used = tuple(sorted(old_names))
        return current

    @field_validator("false_alarm_cost")
    @classmethod
    def _positive_cost(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be above 0 (a false alarm always costs something)")
        return value

    @field_validator("drift_psi", "prediction_retention_days")
    @classmethod
    def _above_zero(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be above 0")
        return value

    @model_validator(mode="after")
    def _retention_covers_open_weeks(self) -> Settings:
        # The realized accuracy recomputes its open weeks from the history: it must still be there.
        needed = 7 * open_weeks(self.promise_business_days)
        if self.prediction_retention_days < needed:
            raise SettingsConflict(
                f"BUFFALO_PREDICTION_RETENTION_DAYS must be at least {needed} days with "
                f"BUFFALO_PROMISE_BUSINESS_DAYS={self.promise_business_days}: the realized accuracy of "
                "the weeks still open is computed from the prediction history"
            )
        return self

    @field_validator("min_realized_precision")
    @classmethod
    def _a_share(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError("must be between 0 and 1")
        return value

    @field_validator("analytics_as_of")
    @classmethod
    def _with_zone(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-06-01T12:00:00+02:00")
        return value

    # -- derived -------------------------------------------------------------------------
    @property
    def uses_sandbox(self) -> bool:
        """No real API configured: the local sandbox and its public default credentials."""
        return not self.base_url

    def client_options(self) -> ClientOptions:
        """The Buffalo client's options these settings set (the rest keep their defaults)."""
        return ClientOptions(
            concurrency=self.concurrency,
            requests_per_second=self.requests_per_second,
            verify_tls=self.verify_tls,
            ca_bundle=self.ca_bundle,
            max_response_bytes=self.max_response_bytes,
        )

    @property
    def api_url(self) -> str:
        return self.base_url or SANDBOX_URL

    @property
    def schedule_on(self) -> bool:
        """Dagster's ingest schedule starts on: Dagster orchestrates, and it is wanted."""
        if self.orchestrator != "dagster":
            return False
        return self.schedule_enabled if self.schedule_enabled is not None else not self.uses_sandbox

    @property
    def env_file(self) -> Path:
        return project_dir(self.home) / ".env"

    @property
    def renamed_in_use(self) -> dict[str, str]:
        """The old names this instance was given, each with its new name."""
        return {old: env_name(RENAMED[old]) for old in self._old_names_used}


class _OldNames(PydanticBaseSettingsSource):
    """The values of `RENAMED`'s old names: from the environment, else from `.env`.

    They go to the validator under one key of their own: it applies them where the new name
    is unset and compares them where it is set.
    """

    def __init__(self, settings_cls: type[BaseSettings], *sources: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.sources = [source for source in sources if isinstance(source, EnvSettingsSource)]

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # no field of its own: see __call__

    def __call__(self) -> dict[str, Any]:
        found: dict[str, str] = {}
        for old in RENAMED:
            for source in self.sources:  # the environment first: it wins over .env
                # Case and empty values are treated as for every other setting.
                value = source.env_vars.get(old if source.case_sensitive else old.lower())
                if value is not None:
                    found[old] = value
                    break
        return {_OLD_NAMES_KEY: found} if found else {}


def _same_value(field: FieldInfo, new: Any, old: Any) -> bool:
    """The old and the new name's values mean the same (`72` and `72.0` do)."""
    if new == old:
        return True
    adapter: TypeAdapter[Any] = TypeAdapter(field.annotation or Any)
    try:
        return bool(adapter.validate_python(new) == adapter.validate_python(old))
    except ValidationError:
        return False


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _where(info: FieldInfo) -> Any:
    return info.json_schema_extra.get("where") if isinstance(info.json_schema_extra, dict) else None


def fields_where(where: Where) -> list[str]:
    """Environment variable names of the settings read in `where`."""
    return [env_name(name) for name, info in Settings.model_fields.items() if _where(info) == where]


def old_names_where(where: Where) -> list[str]:
    """The old names of renamed settings read in `where` (still read, with a warning)."""
    return [old for old, field in RENAMED.items() if _where(Settings.model_fields[field]) == where]


def renamed_warnings(current: Settings) -> list[str]:
    """One line per renamed setting still set by its old name (the name only, never the value)."""
    return [
        f"{old} -> {new}: the setting was renamed; the old name works until the next minor "
        "release, rename it where it is set"
        for old, new in current.renamed_in_use.items()
    ]


def project_dir(home: Path | None = None) -> Path:
    """The project folder: `BUFFALO_HOME`, else the nearest folder up from here with a workspace.yaml."""
    configured = home or os.environ.get(env_name("home"))
    if configured:
        return Path(configured).resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "workspace.yaml").exists():
            return folder
    return cwd


def state_dir() -> Path:
    """Local state (embedded database, Dagster artifacts): `<project>/.buffalo`."""
    return project_dir() / ".buffalo"


def load() -> Settings:
    """The settings as the environment and `<project>/.env` say now (a fresh read each call)."""
    return Settings(_env_file=project_dir() / ".env")


def markdown_table() -> str:
    """The settings table of docs/settings.md, generated from the declarations."""
    lines = ["| variable | default | where read | meaning |", "| --- | --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        shown = extra.get("shown_default")
        if shown is None:
            default = info.default
            text = str(default).lower() if isinstance(default, bool) else str(default)
            shown = "unset" if default is None else f"`{text}`"
        lines.append(f"| `{env_name(name)}` | {shown} | {extra.get('where')} | {info.description} |")
    return "\n".join(lines) + "\n"


def env_file_warning(path: Path) -> str | None:
    """One line when `path` (the `.env` holding the secrets) can be read by other users."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    if not mode & 0o077:
        return None
    return (
        f"{path} holds secrets but other users of this machine may read it (mode {mode:04o}): "
        f"chmod 600 {path}"
    )


def dotenv_values_for_handover() -> dict[str, str]:
    """`.env` entries not already in the environment: what the CLI hands to Dagster processes."""
    from dotenv import dotenv_values

    path = project_dir() / ".env"
    if not path.exists():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None and k not in os.environ}


ANALYTICS_AS_OF = f"{ENV_PREFIX}ANALYTICS_AS_OF"


@contextmanager
def analytics_as_of(moment: str | None) -> Iterator[None]:
    """BUFFALO_ANALYTICS_AS_OF set to `moment` (ISO time) for the block, as before after it.

    For runs executed in this process (`execute_in_process`, `materialize`): the demo's first
    run and the tests' replayed days. `None` leaves the environment alone.
    """
    if moment is None:
        yield
        return
    before = os.environ.get(ANALYTICS_AS_OF)
    os.environ[ANALYTICS_AS_OF] = moment
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ANALYTICS_AS_OF, None)
        else:
            os.environ[ANALYTICS_AS_OF] = before


def open_weeks(promise_business_days: int) -> int:
    """Weeks whose realized accuracy may still change: the promise's weeks (five business days
    a week) after a prediction, plus one for holidays, the prediction's own week and a margin."""
    return -(-promise_business_days // 5) + 4
