#!/bin/bash
# Item 2: big-frame attack, silent peer, 1000 half-open connections. usage: run_attack.sh zmqrs|rzmq|omq
cd "$(dirname "$0")"; C=$1; B=./b-$C/target/release/b-$C; PY=venv/bin/python; P=$((18000 + RANDOM % 1000))
ulimit -n 4096
$B null-pull $P > /tmp/att.$C.txt 2>&1 & S=$!; sleep 0.5
echo "=== $C: big frame (2^62) attack on NULL PULL, max msg size 1 MiB (zmqrs: no such option) ==="
timeout 10 $PY bigframe.py $P
sleep 0.5
if kill -0 $S 2>/dev/null; then echo "server process alive: yes (RSS $(ps -o rss= -p $S) KiB)"; else wait $S; echo "server process alive: NO (exit status $?)"; fi
echo "--- normal pyzmq PUSH after attack:"; timeout 10 $PY interop.py push $P nocurve | tail -1; sleep 0.3
grep -E "recv|panic|memory|abort|alloc" /tmp/att.$C.txt | head -5
if kill -0 $S 2>/dev/null; then
echo "=== $C: silent peer (connect, send nothing) ==="; timeout 30 $PY halfopen.py $P silent 1 20
echo "=== $C: 1000 half-open connections (10 greeting bytes each), held up to 25 s ==="; timeout 60 $PY halfopen.py $P greet 1000 25
echo "server alive: $(kill -0 $S 2>/dev/null && echo yes RSS $(ps -o rss= -p $S) KiB threads $(ls /proc/$S/task | wc -l))"
echo "--- normal pyzmq PUSH after half-open storm:"; timeout 10 $PY interop.py push $P nocurve | tail -1; sleep 0.3
grep -c "\[recv\]" /tmp/att.$C.txt | sed 's/^/messages received total: /'
kill $S; fi
