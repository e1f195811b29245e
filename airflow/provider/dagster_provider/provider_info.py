"""What Airflow learns about this provider from its `apache_airflow_provider` entry point.

Airflow 3 builds the connection form from `conn-fields` and `ui-field-behaviour` below;
Airflow 2 asks the hook (`DagsterHook.get_connection_form_widgets`). Both describe the
same fields, stored in the connection's extra under the same keys.
"""

from __future__ import annotations

from typing import Any

from dagster_provider.version import __version__

CONNECTION_TYPE = "dagster"

# key in the connection's extra -> (label, JSON schema of the value, description)
EXTRA_FIELDS: dict[str, tuple[str, dict[str, Any], str]] = {
    "location": (
        "Code location",
        {"type": ["string", "null"], "default": "buffalo_assets"},
        "The Dagster code location that defines the assets.",
    ),
    "repository": (
        "Repository",
        {"type": ["string", "null"]},
        "Only when the code location has more than one repository; asked from Dagster otherwise.",
    ),
    "ca_bundle": (
        "CA bundle",
        {"type": ["string", "null"]},
        "Path to a CA certificate file that signed the Dagster webserver's certificate.",
    ),
    "verify": (
        "Verify TLS",
        {"type": ["boolean", "null"], "default": True},
        "Untick only for a test server with a self-signed certificate.",
    ),
    "timeout": (
        "Timeout (s)",
        {"type": ["integer", "null"], "default": 30},
        "Seconds per request to Dagster.",
    ),
    "token_header": (
        "Token header",
        {"type": ["string", "null"]},
        "Header carrying the token as is (e.g. Dagster-Cloud-Api-Token); default: Authorization: Bearer.",
    ),
}

HIDDEN_FIELDS = ["schema", "port", "login", "extra"]
RELABELING = {"host": "Dagster URL", "password": "API token"}
PLACEHOLDERS = {
    "host": "http://dagster-webserver:3000",
    "password": "only if the webserver asks for a token",
    "location": "buffalo_assets",
    "ca_bundle": "/etc/ssl/certs/company-ca.pem",
    "timeout": "30",
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-buffalo-dagster",
        "name": "Dagster (Buffalo Orders Platform)",
        "description": "Materialize Dagster assets from Airflow and wait for the run.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": CONNECTION_TYPE,
                "hook-class-name": "dagster_provider.hooks.DagsterHook",
                "hook-name": "Dagster",
                "conn-fields": {
                    key: {"label": label, "schema": schema, "description": description}
                    for key, (label, schema, description) in EXTRA_FIELDS.items()
                },
                "ui-field-behaviour": {
                    "hidden-fields": HIDDEN_FIELDS,
                    "relabeling": RELABELING,
                    "placeholders": PLACEHOLDERS,
                },
            }
        ],
        "extra-links": ["dagster_provider.operators.DagsterRunLink"],
    }
