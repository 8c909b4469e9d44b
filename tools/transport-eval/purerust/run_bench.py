"""Item 3: throughput, alternating candidates, 3 rounds, medians. Separate sender/receiver processes.
usage: venv/bin/python run_bench.py [ROUNDS]"""
import os, subprocess, sys, time, statistics, random
os.chdir(os.path.dirname(os.path.abspath(__file__)))
env = dict(os.environ)
for l in open('keys.env'):
    k, v = l.strip().split('=', 1); env[k] = v.strip("'")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
N_NULL, N_CURVE, N_RT = 300_000, 100_000, 100_000
cases = [('pushpull', c, m) for c in ('zmqrs', 'rzmq', 'omq') for m in ('null', 'curve') if not (c == 'zmqrs' and m == 'curve')]
cases += [('routerdealer', c, 'null') for c in ('zmqrs', 'rzmq', 'omq')]
cases += [('routerdealer', c, 'curve') for c in ('rzmq', 'omq')]
res = {c: [] for c in cases}
port = 19000 + random.randint(0, 500)
def run(case):
    global port
    port += 1
    kind, c, m = case
    b = f'./b-{c}/target/release/b-{c}'
    if kind == 'pushpull':
        n = N_NULL if m == 'null' else N_CURVE
        rx = subprocess.Popen([b, 'bench-pull', str(port), str(n), m], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(0.3)
        tx = subprocess.Popen([b, 'bench-push', str(port), str(n), m], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        rx = subprocess.Popen([b, 'bench-router', str(port), str(N_RT), m], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(0.3)
        tx = subprocess.Popen([b, 'bench-dealers', str(port), m], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out, _ = rx.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        rx.kill(); out = ''
    try:
        tx.wait(timeout=10)
    except subprocess.TimeoutExpired:
        tx.kill(); tx.wait()
    for l in out.splitlines():
        if l.startswith('RATE'):
            return float(l.split()[1])
    return None
for r in range(ROUNDS):
    for case in cases:  # alternating: every case once per round
        v = run(case)
        res[case].append(v)
        print(f'round {r+1} {case[0]:12s} {case[1]:6s} {case[2]:5s} {v}', flush=True)
print('\nmedians (msgs/s for push-pull; round trips/s for router-dealer), ratio to zmq.rs NULL of same pattern:')
for case in cases:
    vals = [v for v in res[case] if v is not None]
    med = statistics.median(vals) if vals else None
    base = [v for v in res[(case[0], 'zmqrs', 'null')] if v is not None]
    bmed = statistics.median(base) if base else None
    ratio = f'{med / bmed:.2f}x' if med and bmed else 'n/a'
    print(f'{case[0]:12s} {case[1]:6s} {case[2]:5s} median {med and round(med):>9}  runs {[v and round(v) for v in res[case]]}  vs zmq.rs {ratio}')
