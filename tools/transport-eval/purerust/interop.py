"""pyzmq (libzmq 4.3.5) CURVE clients against a Rust server.
usage: interop.py push|sub|dealer PORT good|bad|nocurve"""
import os, sys, time, zmq
mode, port, who = sys.argv[1], sys.argv[2], sys.argv[3]
keys = dict(l.strip().split('=', 1) for l in open(os.path.join(os.path.dirname(__file__), 'keys.env')) if '=' in l)
keys = {k: v.strip("'") for k, v in keys.items()}
ctx = zmq.Context()
t = {'push': zmq.PUSH, 'sub': zmq.SUB, 'dealer': zmq.DEALER}[mode]
s = ctx.socket(t)
s.linger = 1000
if who != 'nocurve':
    pre = 'CLIENT' if who == 'good' else 'BAD'
    s.curve_secretkey = keys[pre + '_SECRET'].encode()
    s.curve_publickey = keys[pre + '_PUBLIC'].encode()
    s.curve_serverkey = keys['SERVER_PUBLIC'].encode()
mon = s.get_monitor_socket()
s.connect(f'tcp://127.0.0.1:{port}')
if mode == 'sub':
    s.setsockopt(zmq.SUBSCRIBE, b'')
deadline = time.time() + 3
events = []
while time.time() < deadline:
    if mon.poll(100):
        from zmq.utils.monitor import recv_monitor_message
        ev = recv_monitor_message(mon)
        events.append(ev['event'])
        if ev['event'] in (zmq.EVENT_HANDSHAKE_SUCCEEDED,):
            break
names = {v: k for k, v in zmq.__dict__.items() if k.startswith('EVENT_')}
print('client events (last 4):', [names.get(e, e) for e in events][-4:])
if mode == 'push':
    s.send(f'hello from {who} client'.encode())
    time.sleep(0.5)
    print('push: sent')
elif mode == 'sub':
    s.rcvtimeo = 2000
    try:
        print('sub got:', [s.recv() for _ in range(3)])
    except zmq.Again:
        print('sub: timeout, nothing received')
elif mode == 'dealer':
    s.rcvtimeo = 2000
    s.send(f'ping from {who}'.encode())
    try:
        print('dealer got echo (all frames):', s.recv_multipart())
    except zmq.Again:
        print('dealer: timeout, no echo')
