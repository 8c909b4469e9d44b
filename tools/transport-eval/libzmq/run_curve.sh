#!/bin/bash
# Item 1: CURVE interop, Rust libzmq server (zmq 0.10 + links override -> Debian libzmq) vs pyzmq clients.
set -u
cd "$(dirname "$0")"
ZT=rs/target/release/zt; PY=venv/bin/python
read SPUB SSEC < <($ZT keygen)
read APUB ASEC < <($ZT keygen)     # allowed client (Rust-generated key)
read BPUB BSEC < <($PY -c 'import zmq; p,s=zmq.curve_keypair(); print(p.decode(), s.decode())')  # allowed client (pyzmq key)
read XPUB XSEC < <($PY -c 'import zmq; p,s=zmq.curve_keypair(); print(p.decode(), s.decode())')  # NOT allowed
printf "%s svc-alpha\n%s svc-beta\n" "$APUB" "$BPUB" > ./allow.txt
echo "server pub=$SPUB  allowed: A=$APUB B=$BPUB  intruder X=$XPUB"
for pat in pull:push sub:pub router:dealer; do
  srv=${pat%%:*}; cli=${pat##*:}; port=$((6100 + RANDOM % 500))
  echo "=== $srv (Rust, CURVE server) <- $cli (pyzmq, CURVE client) port $port"
  $ZT curve-server $srv tcp://127.0.0.1:$port $SSEC allow.txt 4 8 &
  SP=$!; sleep 0.3
  $PY curve_client.py $cli tcp://127.0.0.1:$port $SPUB $APUB $ASEC A
  $PY curve_client.py $cli tcp://127.0.0.1:$port $SPUB $XPUB $XSEC X
  $PY curve_client.py $cli tcp://127.0.0.1:$port $SPUB $BPUB $BSEC B
  wait $SP
done
