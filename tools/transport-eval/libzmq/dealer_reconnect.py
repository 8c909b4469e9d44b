import zmq, time, sys
c = zmq.Context(); d = c.socket(zmq.DEALER); d.reconnect_ivl = 100; d.connect(sys.argv[1]); d.rcvtimeo = 300
ok = 0
for i in range(40):
    d.send_string(f"ping{i}")
    try: d.recv(); ok += 1
    except zmq.Again: pass
    time.sleep(0.1)
print(f"pyzmq DEALER: {ok}/40 pings answered across a ROUTER restart")
