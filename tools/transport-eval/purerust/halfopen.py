"""usage: halfopen.py PORT silent|greet N HOLD_SECONDS
silent: connect and send nothing; greet: send only the first 10 greeting bytes. Reports when the server closes each."""
import socket, sys, time, selectors
port, kind, n, hold = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sel = selectors.DefaultSelector()
socks = []
t0 = time.time()
for i in range(n):
    try:
        s = socket.create_connection(('127.0.0.1', port), timeout=5)
    except OSError as e:
        print(f'connect {i} failed: {e}'); break
    if kind == 'greet':
        s.sendall(b'\xff' + b'\x00' * 8 + b'\x7f')
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, time.time())
    socks.append(s)
print(f'opened {len(socks)} connections in {time.time()-t0:.2f}s')
closed = []
end = time.time() + hold
while time.time() < end and len(closed) < len(socks):
    for key, _ in sel.select(timeout=0.2):
        try:
            d = key.fileobj.recv(4096)
        except (ConnectionResetError, BlockingIOError):
            d = b'' if True else None
        if d == b'':
            closed.append(time.time() - key.data)
            sel.unregister(key.fileobj)
if closed:
    closed.sort()
    print(f'server closed {len(closed)}/{len(socks)}; after min {closed[0]:.2f}s median {closed[len(closed)//2]:.2f}s max {closed[-1]:.2f}s')
else:
    print(f'server closed 0/{len(socks)} within {hold}s')
