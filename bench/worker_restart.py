"""Worker restart time: SIGKILL a serval Python worker and time until its endpoint answers 200.

    python bench/worker_restart.py --server-pid PID --url URL --body FILE [--rounds 10]

The workers are the server's child processes. Prints the time from the kill to the first 200 of
each round, then the median and the maximum.
"""
import argparse
import os
import signal
import statistics
import time
import urllib.error
import urllib.request

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--server-pid", type=int, required=True)
parser.add_argument("--url", required=True)
parser.add_argument("--body", required=True)
parser.add_argument("--rounds", type=int, default=10)
args = parser.parse_args()
body = open(args.body, "rb").read()


def post():
    request = urllib.request.Request(args.url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def workers():
    with open("/proc/%d/task/%d/children" % (args.server_pid, args.server_pid)) as f:
        children = [int(p) for p in f.read().split()]
    # Children of every thread of the server.
    for task in os.listdir("/proc/%d/task" % args.server_pid):
        try:
            with open("/proc/%d/task/%s/children" % (args.server_pid, task)) as f:
                children += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return sorted(set(children))


times = []
for _ in range(args.rounds):
    assert post() == 200
    victims = workers()
    assert victims, "no worker process found"
    start = time.perf_counter()
    os.kill(victims[0], signal.SIGKILL)
    while post() != 200 or victims[0] in workers():
        time.sleep(0.005)
    times.append(time.perf_counter() - start)
    print("restart %.3f s" % times[-1])
print("worker SIGKILL → answering again: median %.3f s, max %.3f s over %d rounds"
      % (statistics.median(times), max(times), len(times)))
