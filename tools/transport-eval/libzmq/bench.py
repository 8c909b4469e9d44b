"""Item 3: alternating throughput runs (3 rounds; every variant once per round), medians.
Receiver/server and sender/workers are separate processes; each prints its own RESULT line."""
import re, statistics, subprocess, sys, time
ZT = "rs/target/release/zt"
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
N, RT = 1_000_000, 200_000
spub, ssec = subprocess.check_output([ZT, "keygen"], text=True).split()
port = [6700]
def pair(server, client):
    port[0] += 1; ep = f"tcp://127.0.0.1:{port[0]}"
    srv = subprocess.Popen([ZT] + [x.format(ep=ep) for x in server], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    cli = subprocess.Popen([ZT] + [x.format(ep=ep) for x in client])
    out, _ = srv.communicate(timeout=120); cli.wait(timeout=30)
    m = re.search(r"(msgs_per_s|roundtrips_per_s)=(\d+)", out)
    return int(m.group(2)) if m else None
V = {
 "pushpull zmq.rs 0.7 (tokio)":         (["zr-pull", "{ep}", str(N)], ["zr-push", "{ep}", str(N), "64"]),
 "pushpull libzmq+AsyncFd NULL":        (["lz-pull", "{ep}", str(N)], ["lz-push", "{ep}", str(N), "64"]),
 "pushpull libzmq blocking NULL":       (["lzb-pull", "{ep}", str(N)], ["lzb-push", "{ep}", str(N), "64"]),
 "pushpull libzmq+AsyncFd CURVE":       (["lz-pull", "{ep}", str(N), ssec], ["lz-push", "{ep}", str(N), "64", spub]),
 "pushpull libzmq blocking CURVE":      (["lzb-pull", "{ep}", str(N), ssec], ["lzb-push", "{ep}", str(N), "64", spub]),
 "echo ROUTER->2 DEALER zmq.rs 0.7":    (["zr-router", "{ep}", str(RT), "64"], ["zr-dealers", "{ep}", "2"]),
 "echo ROUTER->2 DEALER libzmq NULL":   (["lz-router", "{ep}", str(RT), "64"], ["lz-dealers", "{ep}", "2"]),
 "echo ROUTER->2 DEALER libzmq CURVE":  (["lz-router", "{ep}", str(RT), "64", ssec], ["lz-dealers", "{ep}", "2", spub]),
}
res = {k: [] for k in V}
for r in range(ROUNDS):
    for k, (s, c) in V.items():
        res[k].append(pair(s, c))
    print(f"round {r+1}: " + ", ".join(f"{k.split()[0]}:{v[-1]}" for k, v in res.items()), flush=True)
med = {k: statistics.median([x for x in v if x]) if any(v) else None for k, v in res.items()}
print(f"\n{'variant':40s} {'runs (msgs/s or round-trips/s)':40s} median")
for k, v in res.items():
    print(f"{k:40s} {str(v):40s} {med[k]:,.0f}")
zr = med["pushpull zmq.rs 0.7 (tokio)"]; ze = med["echo ROUTER->2 DEALER zmq.rs 0.7"]
print("\nratios vs zmq.rs (median/median):")
for k in V:
    base = ze if k.startswith("echo") else zr
    print(f"  {k:40s} {med[k]/base:.2f}x")
