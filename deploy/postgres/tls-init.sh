#!/usr/bin/env bash
# Entrypoint of the compose `postgres` service: puts the server's TLS certificate and key
# where PostgreSQL reads them (ssl_cert_file, ssl_key_file in docker-compose.yml), then runs
# the command it is given: the image's own entrypoint, which starts PostgreSQL.
#
#   deploy/certs/server.crt and server.key (mounted at $PG_TLS_SOURCE): made by
#     `buffalo db make-cert`, or your organisation's (the certificate file may hold the
#     chain after it). Copied at every start; the key owned by the server's user and
#     readable by it only, as PostgreSQL demands.
#   neither there: a self-signed certificate, made here once per container. Connections
#     are still encrypted, but no client can verify the server, so Power BI refuses it:
#     make the certificate (docs/deploy.md, "PostgreSQL for Power BI").
#
# tests/test_bi_tls.py runs this script natively, with the variables below pointed at a
# temporary folder.
set -euo pipefail
umask 077

source_dir="${PG_TLS_SOURCE:-/etc/buffalo/certs}"
tls_dir="${PG_TLS_DIR:-/var/lib/postgresql/tls}"
owner="${PG_TLS_OWNER:-postgres}"

say() { echo "tls-init: $*" >&2; }

give() {  # give MODE FILE...: to the server's user (when we may), with MODE
    local mode="$1"
    shift
    if [ "$(id -u)" = 0 ]; then
        chown "$owner:$(id -gn "$owner")" "$@"
    fi
    chmod "$mode" "$@"
}

mkdir -p "$tls_dir"
give 0700 "$tls_dir"
if [ -f "$source_dir/server.crt" ] && [ -f "$source_dir/server.key" ]; then
    cp "$source_dir/server.crt" "$tls_dir/server.crt"
    cp "$source_dir/server.key" "$tls_dir/server.key"
    rm -f "$tls_dir/self-signed"
    say "TLS with the certificate of $source_dir/server.crt"
elif [ -e "$source_dir/server.crt" ] || [ -e "$source_dir/server.key" ]; then
    say "$source_dir has only one of server.crt and server.key: give it both, or neither"
    exit 1
else
    if [ ! -f "$tls_dir/self-signed" ]; then
        if ! openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days 3650 \
            -subj "/CN=Buffalo PostgreSQL (self-signed)" \
            -keyout "$tls_dir/server.key" -out "$tls_dir/server.crt" 2>"$tls_dir/openssl.log"; then
            cat "$tls_dir/openssl.log" >&2
            exit 1
        fi
        touch "$tls_dir/self-signed"
    fi
    say "no certificate in $source_dir: TLS with a self-signed one made in this container;" \
        "clients cannot verify it (Power BI refuses it): run \`buffalo db make-cert\`"
fi
give 0644 "$tls_dir/server.crt"
give 0600 "$tls_dir/server.key"
exec "$@"
