import sys, zmq, time
ep, tag = sys.argv[1], sys.argv[2]
ctx = zmq.Context(); s = ctx.socket(zmq.PUSH); s.linger = 2000
if len(sys.argv) > 3:
    s.curve_serverkey = sys.argv[3].encode(); p, k = zmq.curve_keypair(); s.curve_publickey = p; s.curve_secretkey = k
s.connect(ep); s.send_string(tag); s.close(); ctx.term()
