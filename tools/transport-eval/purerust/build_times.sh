#!/bin/bash
# Clean release build of each scratch crate with a trivial main; sequential.
cd "$(dirname "$0")"
for c in zmqrs rzmq omq; do
  (cd b-$c && cargo clean -q && s=$(date +%s.%N) && cargo build --release -q 2>&1 | tail -3; e=$(date +%s.%N); echo "$c clean release build: $(echo "$e - $s" | bc) s")
done
