#!/usr/bin/python3
"""latency.py CLOSED STORED ROWS

Each input is tab separated, one file per line: name, then a Unix time in
seconds (fractional). CLOSED: when the writer's close() returned. STORED:
when s3rver stored the object. ROWS: the documents row's created_at.
Prints the W4 figures as one `key=value;` string (milliseconds): p50, p99
and max from close() to stored (s3_*) and to the row (db_*), and how many
files had each time (s3_n, db_n). Percentiles are nearest-rank.
"""
import math
import os
import sys


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2 and parts[1]:
                out[os.path.basename(parts[0])] = float(parts[1])
    return out


def pct(v, p):
    if not v:
        return float("nan")
    return v[max(0, math.ceil(p / 100.0 * len(v)) - 1)]


def main():
    closed, stored, rows = (load(p) for p in sys.argv[1:4])
    out = []
    for tag, when in (("s3", stored), ("db", rows)):
        lat = sorted((when[k] - t) * 1000.0 for k, t in closed.items() if k in when)
        out.append("%s_n=%d" % (tag, len(lat)))
        for name, p in (("p50", 50), ("p99", 99), ("max", 100)):
            out.append("%s_%s_ms=%.1f" % (tag, name, pct(lat, p)))
    sys.stdout.write(";".join(out) + ";")


if __name__ == "__main__":
    main()
