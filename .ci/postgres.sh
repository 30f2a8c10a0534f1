#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests (Debian's packages; TESTING.md). Sourced by
# .ci/run, or by hand: `source .ci/postgres.sh` starts one and exports its URL in
# FLOTILLA_TEST_POSTGRES; `pg_test_stop` (also run on exit by .ci/run's trap) stops it and
# removes its directory. Trust authentication on 127.0.0.1 only, a random free port.
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
  echo "postgres.sh: PostgreSQL is not installed (apt-get install -y postgresql)" >&2
  return 1 2>/dev/null || exit 1
fi
PG_TEST_DIR=$(mktemp -d /tmp/flotilla-pg.XXXXXX)
chmod 755 "$PG_TEST_DIR"
chown postgres "$PG_TEST_DIR"
# A free port: ask the kernel for one, then hand it to the server.
PG_TEST_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_TEST_DIR/data" -A trust -U postgres >"$PG_TEST_DIR/initdb.log" 2>&1 \
  || { cat "$PG_TEST_DIR/initdb.log" >&2; return 1 2>/dev/null || exit 1; }
# The tests make one database each and run in parallel: allow plenty of connections.
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_TEST_DIR/data" -w -l "$PG_TEST_DIR/log" \
  -o "-p $PG_TEST_PORT -k $PG_TEST_DIR -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null \
  || { cat "$PG_TEST_DIR/log" >&2; return 1 2>/dev/null || exit 1; }
export FLOTILLA_TEST_POSTGRES="postgres://postgres@127.0.0.1:$PG_TEST_PORT/postgres"
# What the tests need to stop and start the server (the connection-loss test).
export FLOTILLA_TEST_POSTGRES_CTL="runuser -u postgres -- $PG_BIN/pg_ctl -D $PG_TEST_DIR/data"
pg_test_stop() {
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_TEST_DIR/data" stop -m fast >/dev/null 2>&1 || true
  rm -rf "$PG_TEST_DIR"
}
echo "PostgreSQL for the tests: $FLOTILLA_TEST_POSTGRES" >&2
