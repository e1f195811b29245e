"""The peer `python -m bench.e2e` compares against: dlt's `rest_api` source doing our ingest.

Runs in the bench's own virtualenv (`make bench-venv`: bench/.venv-dlt from the pinned
bench/requirements-dlt.txt), never in the project's; dlt is a peer, not a dependency:

    bench/.venv-dlt/bin/python bench/dlt_peer.py --base-url URL --pg-url URL --workers 20

Same work as `order_ids` + `raw_orders` on a first run: log in (RSA, the project's own
`encrypt_password`), walk the order list page by page, fetch every order's detail with
`workers` requests in flight (a parallelized dependent resource), and load the details into
PostgreSQL (dataset `dlt_orders`, nested fields kept as JSON as we keep the payload).
Credentials come from the environment (BUFFALO_USERNAME, BUFFALO_PASSWORD), never argv.
Prints one JSON line: rows loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any


def login(base_url: str, username: str, password: str) -> str:
    import base64
    from urllib.parse import quote

    import requests
    from Crypto.Cipher import PKCS1_v1_5
    from Crypto.PublicKey import RSA

    def encrypt_password(password: str, public_key_b64: str) -> str:
        # The API contract's login: RSA PKCS#1 v1.5, base64, percent-encoded. Written here, as a
        # dlt user would, so the peer needs none of the project's code or dependencies.
        key = RSA.import_key(base64.b64decode(public_key_b64.strip()))
        ciphertext = PKCS1_v1_5.new(key).encrypt(password.encode("utf-8"))
        return quote(base64.b64encode(ciphertext).decode("ascii"), safe="")

    session = requests.Session()
    key = session.get(f"{base_url}/buffalo/getRsaPublicKey", timeout=30).text
    body = session.post(
        f"{base_url}/buffalo/login",
        data=json.dumps({"username": username, "password": encrypt_password(password, key)}),
        headers={"Content-Type": "application/json;charset=UTF-8"},
        timeout=30,
    ).json()
    return str(body["data"]["ticket"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--pg-url", required=True, help="postgresql://user@host:port/database")
    parser.add_argument("--workers", type=int, default=20)
    args = parser.parse_args(argv)
    # dlt reads its settings from the environment: threads for the parallelized resource.
    os.environ["EXTRACT__WORKERS"] = str(args.workers)
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")

    import dlt
    from dlt.common.configuration.specs import ConnectionStringCredentials
    from dlt.sources.rest_api import rest_api_source

    credentials = ConnectionStringCredentials(args.pg_url)
    if not credentials.password:
        # dlt insists on a password (so libpq never reads a password file): PGPASSWORD, as
        # bench.e2e passes the embedded server's; a server with trust authentication ignores it.
        credentials.password = os.environ.get("PGPASSWORD") or "unused"
    ticket = login(args.base_url, os.environ["BUFFALO_USERNAME"], os.environ["BUFFALO_PASSWORD"])

    source = rest_api_source(
        {
            "client": {
                "base_url": args.base_url,
                "headers": {"Authorization": ticket, "Buffalo-Ticket": ticket},
            },
            "resource_defaults": {"write_disposition": "replace", "max_table_nesting": 0},
            "resources": [
                {
                    "name": "order_list",
                    "selected": False,
                    "endpoint": {
                        "path": "mobileapi/myorder/orderList",
                        "params": {"condition": "", "status": 0, "language": "en", "tableIndex": 0},
                        "data_selector": "data.resultMap.list",
                        "paginator": {
                            "type": "page_number",
                            "page_param": "pageNum",
                            "base_page": 1,
                            "total_path": None,
                            "stop_after_empty_page": True,
                        },
                    },
                },
                {
                    "name": "orders",
                    "parallelized": True,
                    "endpoint": {
                        "path": "mobileapi/myorder/detail/{resources.order_list.id}",
                        "params": {"language": "en"},
                        # What the web client sends (the API refuses a detail call without it).
                        "headers": {
                            "Referer": "https://index.buffaloex.com/client/orders/order-detail?id={resources.order_list.id}"
                        },
                        "paginator": "single_page",
                        # An order the API refuses is skipped, as ours records it in
                        # ops.fetch_errors and goes on (dlt's default fails the whole load).
                        "response_actions": [
                            {"status_code": 400, "action": "ignore"},
                            {"status_code": 404, "action": "ignore"},
                        ],
                    },
                },
            ],
        }
    )
    with tempfile.TemporaryDirectory(prefix="dlt-bench-") as pipelines_dir:
        pipeline = dlt.pipeline(
            pipeline_name="buffalo_bench",
            pipelines_dir=pipelines_dir,
            destination=dlt.destinations.postgres(credentials=credentials.to_native_representation()),
            dataset_name="dlt_orders",
        )
        pipeline.run(source)
        rows = pipeline.last_trace.last_normalize_info.row_counts.get("orders", 0)
    result = {"rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
