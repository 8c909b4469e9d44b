"""pyzmq CURVE client: PATTERN(push|pub|dealer) ENDPOINT SERVER_PUB CLIENT_PUB CLIENT_SECRET TAG
Reports handshake outcome via socket monitor."""
import sys, time, zmq
from zmq.utils.monitor import recv_monitor_message
pattern, ep, spub, cpub, csec, tag = sys.argv[1:7]
ctx = zmq.Context()
kind = {"push": zmq.PUSH, "pub": zmq.PUB, "dealer": zmq.DEALER}[pattern]
s = ctx.socket(kind)
s.curve_serverkey = spub.encode(); s.curve_publickey = cpub.encode(); s.curve_secretkey = csec.encode()
s.linger = 500
mon = s.get_monitor_socket()
s.connect(ep)
outcome = "no handshake event"
deadline = time.time() + 3
while time.time() < deadline:
    if mon.poll(200):
        ev = recv_monitor_message(mon)
        name = zmq.Event(ev["event"]).name
        if name in ("HANDSHAKE_SUCCEEDED",) or name.startswith("HANDSHAKE_FAILED"):
            outcome = f"{name} value={ev['value']}"
            break
print(f"client[{tag}] {pattern}: {outcome}", flush=True)
if outcome.startswith("HANDSHAKE_SUCCEEDED"):
    if pattern == "pub":
        time.sleep(0.3)  # let the subscription arrive
    for i in range(2):
        s.send_string(f"{tag}-{i}")
    if pattern == "dealer":
        s.rcvtimeo = 2000
        for i in range(2):
            print(f"client[{tag}] got reply {s.recv_string()!r}", flush=True)
time.sleep(0.3)
