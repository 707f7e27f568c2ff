#!/usr/bin/python3
"""Samples the order service's projection lag while a load runs: one kept-alive connection
polls /metrics every 50 ms and prints projection_lag_seconds until SIGTERM.

A curl and an awk forked every 50 ms cost a fifth of a core, which on two cores took a fifth
of the requests the benchmark was measuring; one connection costs next to nothing.

    bench/lag_sampler.py PORT >>lag.txt
"""
import http.client
import signal
import sys
import time

running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
while running:
    try:
        conn.request("GET", "/metrics")
        for line in conn.getresponse().read().decode().splitlines():
            if line.startswith("projection_lag_seconds"):
                print(line.split()[-1], flush=True)
    except (OSError, http.client.HTTPException):
        conn.close()  # reconnects on the next request
    time.sleep(0.05)
