#!/bin/bash
# Item 1: CURVE interop, Rust server (bound) vs pyzmq client. usage: run_interop.sh omq|rzmq
cd "$(dirname "$0")"; set -a; . ./keys.env; set +a  # keys.env: made by curve keygen, not committed
C=$1; B=./b-$C/target/release/b-$C; PY=venv/bin/python; P=$((17000 + RANDOM % 1000))
run() { # mode clientmode who allowed
  echo "=== $C $1 server, pyzmq $2 client key=$3 (allowed list: ${4:-any}) ==="
  $B $1 $P $4 > /tmp/srv.$$ 2>&1 & S=$!; sleep 0.5
  timeout 10 $PY interop.py $2 $P $3 2>&1
  sleep 0.3; kill $S; wait $S 2>/dev/null; sed 's/^/  server| /' /tmp/srv.$$ | head -12; P=$((P+1))
}
run curve-pull push good "$CLIENT_PUBLIC"
run curve-pull push bad "$CLIENT_PUBLIC"
run curve-pull push nocurve "$CLIENT_PUBLIC"
run curve-pub sub good "$CLIENT_PUBLIC"
run curve-pub sub bad "$CLIENT_PUBLIC"
run curve-router dealer good "$CLIENT_PUBLIC"
run curve-router dealer bad "$CLIENT_PUBLIC"
