#!/bin/bash
# Item 5: reconnect of a connecting PUSH after the bound PULL restarts; HWM with no peer. usage: run_semantics.sh omq|rzmq
cd "$(dirname "$0")"; C=$1; B=./b-$C/target/release/b-$C; P=$((20000 + RANDOM % 1000))
echo "=== $C: PUSH (connect) sends n0..n59 every 100 ms; bound PULL killed at 1.5 s, restarted at 3.0 s ==="
$B null-pull $P > /tmp/sem1.$C 2>&1 & S1=$!; sleep 0.3
$B push-loop $P 2>/tmp/sem_push.$C & X=$!
sleep 1.5; kill -9 $S1; wait $S1 2>/dev/null; sleep 1.5
$B null-pull $P > /tmp/sem2.$C 2>&1 & S2=$!
wait $X; sleep 0.3; kill $S2
echo "first PULL got $(grep -c '\[recv\]' /tmp/sem1.$C) msgs: $(grep -o '"n[0-9]*"' /tmp/sem1.$C | tr -d '"' | sed -n '1p;$p' | paste -sd-)"
echo "restarted PULL got $(grep -c '\[recv\]' /tmp/sem2.$C) msgs: $(grep -o '"n[0-9]*"' /tmp/sem2.$C | tr -d '"' | sed -n '1p;$p' | paste -sd-)"
echo "push errors: $(sort /tmp/sem_push.$C | uniq -c | head -3)"
echo "=== $C: PUSH send_hwm=10, no peer ever ==="; timeout 20 $B hwm-test
