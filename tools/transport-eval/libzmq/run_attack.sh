#!/bin/bash
# Item 2: malformed peers against a Rust libzmq PULL (zmq 0.10 -> Debian libzmq 4.3.4)
cd "$(dirname "$0")"
ZT=rs/target/release/zt; PY=venv/bin/python
echo "### A. NULL mechanism, ZMQ_MAXMSGSIZE=1MiB, HANDSHAKE_IVL=2000ms"
VERBOSE=1 $ZT guard-server tcp://127.0.0.1:6501 1048576 2000 9 &
P=$!; sleep 0.3
$PY attack.py bigframe 6501
$PY attack.py bigframe4g 6501
$PY attack.py garbage 6501
$PY normal_push.py tcp://127.0.0.1:6501 after-attacks-NULL
sleep 0.5; echo "server pid $P alive: $(kill -0 $P 2>/dev/null && echo yes || echo NO)"
wait $P; echo "server exit code $?"

echo "### B. NULL mechanism, NO maxmsgsize (default -1)"
VERBOSE=1 $ZT guard-server tcp://127.0.0.1:6502 -1 2000 5 &
P=$!; sleep 0.3
$PY attack.py bigframe 6502
$PY attack.py bigframe4g 6502
$PY normal_push.py tcp://127.0.0.1:6502 after-attacks-nolimit
wait $P; echo "server exit code $?"

echo "### C. CURVE server, MAXMSGSIZE=1MiB"
read SPUB SSEC < <($ZT keygen)
VERBOSE=1 $ZT guard-server tcp://127.0.0.1:6503 1048576 2000 7 $SSEC &
P=$!; sleep 0.3
$PY attack.py garbage 6503
$PY attack.py nullvscurve 6503
$PY attack.py curvebig 6503
$PY attack.py curvegarbagehello 6503
$PY normal_push.py tcp://127.0.0.1:6503 after-attacks-CURVE $SPUB
wait $P; echo "server exit code $?"

echo "### D. 1000 half-open connections, HANDSHAKE_IVL=2000ms (NULL)"
$ZT guard-server tcp://127.0.0.1:6504 1048576 2000 12 &
P=$!; sleep 0.3
$PY attack.py halfopen 6504 1000 6 &
A=$!; sleep 1
$PY normal_push.py tcp://127.0.0.1:6504 during-halfopen
wait $A
$PY normal_push.py tcp://127.0.0.1:6504 after-halfopen
wait $P; echo "server exit code $?"

echo "### E. same, HANDSHAKE_IVL=0 (disabled)"
$ZT guard-server tcp://127.0.0.1:6505 1048576 0 6 &
P=$!; sleep 0.3
$PY attack.py halfopen 6505 1000 4
wait $P; echo "server exit code $?"
