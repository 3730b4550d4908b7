#!/usr/bin/python3
"""report.py RAW.tsv OUTDIR [NOTES.md ...]

Turns bench/run.sh's raw measurements into OUTDIR/RESULTS.md (tables:
median, min and max of every run; files/s, MiB/s, client CPU-seconds per
1,000 files, peak RSS; the ratio of outboxd to each peer from the same
run; where outboxd stands on each goal) and OUTDIR/results.png (gnuplot).
Each NOTES.md (the hand-written analysis, and sections measured outside
run.sh such as W8's) is appended to RESULTS.md in the order given.
"""
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile

MIB = 1048576.0


def parse(path):
    meta, rows = {}, []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#meta\t"):
                _, k, v = line.split("\t", 2)
                meta[k] = v
                continue
            if not line or line.startswith("#"):
                continue
            c = line.split("\t")
            c += [""] * (12 - len(c))
            extra = {}
            for kv in c[11].split(";"):
                if "=" in kv:
                    k, v = kv.split("=", 1)
                    extra[k] = v
                elif kv:
                    extra[kv] = "1"
            r = dict(workload=c[0], target=c[1], tool=c[2], round=int(c[3]),
                     files=int(c[4]), bytes=int(c[5]), wall=float(c[6]),
                     user=float(c[7]), sys=float(c[8]), rss=int(c[9]),
                     ok=c[10] == "1", extra=extra)
            # the time the rate is measured over
            r["t"] = r["wall"]
            if r["workload"] == "W6" and "sync_s" in extra:
                r["t"] = float(extra["sync_s"])
            r["fps"] = r["files"] / r["t"] if r["t"] > 0 else float("nan")
            r["mibs"] = r["bytes"] / MIB / r["t"] if r["t"] > 0 else float("nan")
            r["cpu"] = r["user"] + r["sys"]
            r["cpu_k"] = r["cpu"] / r["files"] * 1000.0
            r["cpu_us"] = r["cpu"] / r["files"] * 1e6
            r["cpu_gib"] = r["cpu"] / (r["bytes"] / (MIB * 1024.0)) if r["bytes"] else None
            r["rss_mib"] = r["rss"] / 1024.0
            rows.append(r)
    return meta, rows


def group(rows, workload):
    out = {}
    for r in rows:
        if r["workload"] == workload:
            out.setdefault((r["target"], r["tool"]), []).append(r)
    return out


def med(rs, key):
    v = [r[key] if not callable(key) else key(r) for r in rs]
    v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None, None, None
    return statistics.median(v), min(v), max(v)


def fmt(x, nd=None):
    if x is None:
        return "–"
    if nd is None:
        nd = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else 2)
    return "{:,.{}f}".format(x, nd)


def mmm(rs, key, nd=None):
    m, lo, hi = med(rs, key)
    if m is None:
        return "–"
    if len(rs) == 1:
        return fmt(m, nd)
    return "%s (%s–%s)" % (fmt(m, nd), fmt(lo, nd), fmt(hi, nd))


def okcount(rs):
    n = sum(1 for r in rs if r["ok"])
    return "%d/%d" % (n, len(rs))


def ratio(base, peer, key):
    """outboxd / peer: ratio of medians, and the range of per-round ratios."""
    mb, _, _ = med(base, key)
    mp, _, _ = med(peer, key)
    if not mb or not mp:
        return None, "–"
    per = []
    pr = {r["round"]: r[key] for r in peer}
    for r in base:
        if r["round"] in pr and pr[r["round"]]:
            per.append(r[key] / pr[r["round"]])
    s = "%.2f×" % (mb / mp)
    if len(per) > 1:
        s += " (%.2f–%.2f)" % (min(per), max(per))
    return mb / mp, s


def ex(r, k):
    v = r["extra"].get(k)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


TOOL_NAMES = {
    "outboxd": "outboxd (S3 only)",
    "outboxd-c16": "outboxd, OUTBOXD_CONCURRENCY=16",
    "outboxd-c8": "outboxd, OUTBOXD_CONCURRENCY=8 (the earlier default)",
    "outboxd+db": "outboxd (S3 + database)",
    "rclone": "rclone copy (defaults)",
    "rclone-t16": "rclone copy --transfers 16",
    "s3cmd": "s3cmd put --recursive",
    "aws": "aws s3 cp --recursive",
    "curl-p16": "curl --parallel --parallel-max 16",
    "put-floor": "floor: bench/put-floor (libcurl multi, 16 at a time, outboxd's signer, nothing else)",
    "curl": "curl -T (one PUT)",
    "floor": "floor: curl -T beside `openssl dgst -sha256` of the file",
    "outboxd-1put": "outboxd, one PUT (OUTBOXD_MULTIPART_THRESHOLD=5GiB)",
    "aws-c16": "aws s3 cp --recursive, max_concurrent_requests = 16",
}
TARGET_NAMES = {
    "s3rver": "s3rver",
    "sink": "nginx sink (tmpfs)",
    "sink-1g": "nginx sink, large file",
    "s3rver+pg": "s3rver + PostgreSQL",
    "pg-durable": "PostgreSQL, durable (fsync on)",
    "pg-harness": "PostgreSQL, test settings (fsync off)",
}


def tname(t):
    return TOOL_NAMES.get(t, t)


def throughput_table(g, order, base_key, metric, peers_of, names=None, per_gib=False):
    """Rows for W1/W2/W3: one per (target, tool)."""
    cpu_key = "cpu_gib" if per_gib else "cpu_k"
    lines = ["| tool | target | runs ok | wall s | files/s | MiB/s | %s "
             "| peak RSS MiB | outboxd ÷ tool |" % ("CPU s per GiB" if per_gib else "CPU s / 1,000 files"),
             "|---|---|---|---|---|---|---|---|---|"]
    for key in order:
        if key not in g:
            continue
        rs = g[key]
        target, tool = key
        rat = ""
        if tool.startswith("outboxd"):
            rat = "—"
        else:
            b = peers_of(target)
            if b in g:
                rat = ratio(g[b], rs, metric)[1]
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            (names or {}).get(tool, tname(tool)), TARGET_NAMES.get(target, target), okcount(rs),
            mmm(rs, "wall"), mmm(rs, "fps"), mmm(rs, "mibs"),
            mmm(rs, cpu_key), mmm(rs, "rss_mib", 1), rat))
    return lines


W7_DEFAULTS = ("rclone", "aws", "s3cmd")     # peers at their defaults
W7_EQUAL = ("rclone-t16", "aws-c16")        # peers at concurrency 16


def w7_tables(g7, A, L):
    """W7's section; returns the goal rows (rtt, kind, text, ratio, needed)."""
    keys = sorted({t for t, _ in g7}, key=lambda t: (t.split("-")[0] != "backlog", int(t.split("-")[1])))
    rtts = sorted({int(t.split("-")[1]) for t in keys})
    A("## W7: production-like S3, HTTPS with real round trips")
    A("")
    A("Every tool talks HTTPS to `delay.js` (bench/), a TCP proxy on loopback that holds every byte "
      "half the round-trip time in each direction (%s ms round trips; at most 4 MiB in flight per "
      "connection and direction, as a TCP window), in front of nginx terminating TLS (a self-signed CA "
      "given to each tool: AWS_CA_BUNDLE, rclone --ca-cert, s3cmd ca_certs_file; TLS session cache on) "
      "and proxying to s3rver over keep-alive connections. *Backlog*: a job of %s files of 4 KiB present "
      "before the tool starts (s3cmd, which sends one request at a time, gets a tenth of them; its rates "
      "are per file all the same). *Large file*: one %s MiB file. Defaults: outboxd concurrency 16, "
      "rclone 4 transfers, the AWS CLI 10 requests, s3cmd 1; \"16\" rows set each to 16. "
      "*TLS handshakes* are the TCP connections delay.js accepted, each of which makes one (full or "
      "resumed); *requests* are nginx's access log lines. Ratios: outboxd at its defaults against each "
      "peer at its defaults, and against each peer at 16 (outboxd's default is 16). curl, the ceiling of the server "
      "chain: `curl --parallel --parallel-max 16` for the backlog (against outboxd at 16), one `curl -T` "
      "PUT for the large file (UNSIGNED-PAYLOAD, as in W1 and W3)."
      % (" and ".join(str(r) for r in rtts), fmt(max(r["files"] for rs in g7.values() for r in rs), 0),
         fmt(max(r["bytes"] for rs in g7.values() for r in rs) / MIB, 0)))
    A("")
    goals = []
    for target in keys:
        kind, rtt = target.split("-")
        big = kind == "big"
        metric = "mibs" if big else "fps"
        A("### %s, +%s ms per round trip" % ("One large file" if big else "Backlog of 4 KiB files", rtt))
        A("")
        A("| tool | runs ok | wall s | files/s | MiB/s | %s | peak RSS MiB | TLS handshakes (resumed) "
          "| requests | handshakes per 1,000 requests | outboxd ÷ tool |" %
          ("CPU s per GiB" if big else "CPU ms per file"))
        A("|---|---|---|---|---|---|---|---|---|---|---|")
        eq = "outboxd-c16" if (target, "outboxd-c16") in g7 else "outboxd"
        for tool in ("outboxd", "outboxd-c16") + W7_DEFAULTS + W7_EQUAL + ("curl-p16", "curl"):
            rs = g7.get((target, tool))
            if not rs:
                continue
            base = eq if tool in W7_EQUAL + ("curl-p16",) else "outboxd"
            rat = "—" if tool.startswith("outboxd") else (
                ratio(g7[(target, base)], rs, metric)[1] if (target, base) in g7 else "–")
            A("| %s | %s | %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s |" % (
                tname(tool), okcount(rs), mmm(rs, "wall"), mmm(rs, "fps"), mmm(rs, "mibs"),
                mmm(rs, "cpu_gib" if big else "cpu_k"), mmm(rs, "rss_mib", 1),
                mmm(rs, lambda r: ex(r, "handshakes"), 0), mmm(rs, lambda r: ex(r, "resumed"), 0),
                mmm(rs, lambda r: ex(r, "requests"), 0),
                mmm(rs, lambda r: 1000.0 * ex(r, "handshakes") / ex(r, "requests")
                    if ex(r, "requests") else None, 1), rat))
        A("")
        if not big:
            for peers, base, need, what in ((W7_DEFAULTS, "outboxd", 2.0, "at defaults"),
                                            (W7_EQUAL, eq, 1.2, "at concurrency 16")):
                best = [(med(g7[(target, p)], "fps")[0], p) for p in peers if (target, p) in g7]
                best = [b for b in best if b[0]]
                if best and (target, base) in g7:
                    bv, bp = max(best)
                    r = med(g7[(target, base)], "fps")[0] / bv
                    goals.append((rtt, kind, "W7 backlog, +%s ms: outboxd ≥ %.1f× the best peer %s (%s)"
                                  % (rtt, need, what, tname(bp)), r, need))
    return goals


def issues(rows):
    out = []
    for r in rows:
        if not r["ok"]:
            bad = {k: v for k, v in r["extra"].items()
                   if k not in ("write_s", "lost", "lost_rows", "journal_s", "journal_cpu_s",
                                "rss_journaled_kib", "sync_s", "requests")
                   and not k.startswith(("s3_", "db_"))}
            out.append("- %s %s %s round %d: %s" % (
                r["workload"], r["target"], tname(r["tool"]), r["round"],
                ", ".join("%s=%s" % kv for kv in bad.items()) or "not clean"))
    return out


def verdict(ok):
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**not met**"


def main():
    raw, outdir = sys.argv[1], sys.argv[2]
    notes = sys.argv[3:]
    meta, rows = parse(raw)
    L = []
    A = L.append
    quick = meta.get("quick", "0") not in ("", "0")
    A("# outboxd benchmarks: results")
    A("")
    A("Generated by `bash bench/run.sh%s` on %s; the whole run took %.1f minutes. "
      "Raw numbers: [raw.tsv](raw.tsv); chart: [results.png](results.png)."
      % (" --quick" if quick else (" --rounds %s" % meta.get("rounds") if meta.get("rounds") != "3" else ""),
         meta.get("date", "?"), float(meta.get("duration_s", "0")) / 60.0))
    A("")
    dirty = meta.get("dirty", "no")
    A("- **outboxd**: commit `%s`%s; %s" % (
        meta.get("commit", "?"),
        "" if dirty in ("", "no") else ", **working tree dirty** (uncommitted changes in: %s)" % dirty,
        meta.get("outboxd", "")))
    if meta.get("untracked", "none") not in ("", "none"):
        A("  (untracked source files present: %s)" % meta["untracked"])
    # Workloads re-measured by a later run of `run.sh --only`, merged into
    # this raw.tsv in place of the first run's rows (one meta line each).
    for k in sorted(meta):
        if k.startswith("separate "):
            A("- **%s**: from a separate run, %s" % (k[len("separate "):], meta[k]))
    A("- **machine**: %s, %s, %s; work directory on %s" % (
        meta.get("cpu", "?"), meta.get("memory", "?"), meta.get("os", "?"), meta.get("disk", "?")))
    A("- **peers**: %s; %s; %s; %s" % (meta.get("rclone"), meta.get("s3cmd"), meta.get("aws"),
                                        meta.get("curl")))
    A("- **servers**: s3rver %s (node, single-threaded); PostgreSQL %s; nginx %s; chart by gnuplot %s"
      % (meta.get("s3rver"), meta.get("postgresql"), meta.get("nginx"), meta.get("gnuplot")))
    A("- **rounds**: %s of every workload, tools interleaved within each round "
      "(A B C … A B C …); sizes: %s" % (meta.get("rounds"), meta.get("sizes")))
    A("")
    A("How it was measured: every tool, outboxd and peers alike, talks to s3rver **directly** "
      "(not through the tests' SigV4-verifying proxy, whose cost would otherwise be measured), "
      "path-style, plain HTTP on loopback. Every run starts from fresh state: a new uploads "
      "directory and job UUID (so a new key prefix), a new outbox database; stored objects are "
      "counted in s3rver's data directory after each run (and `outboxctl status --json` must "
      "show failed = 0), then deleted. Files for the `--once` runs have an mtime 10 s old, so the "
      "start-up rescan journals them at once (a rescan lets files modified in the last second "
      "settle first). Client CPU and peak RSS come from `wait4()`'s rusage of the client process "
      "tree (bench/measure.py); for the daemon workloads (W2, W4, W5) from /proc/PID/stat "
      "(utime+stime over the measured interval) and VmHWM of outboxd. "
      "\"files/s\" and \"MiB/s\" are per wall second of the run (for W6, of the sync part). "
      "Cells read median (min–max) over the rounds. The ratio column is outboxd's median over "
      "the tool's median (above 1: outboxd is faster), with the range of the per-round ratios.")
    A("")

    # ---- W1
    g = group(rows, "W1")
    if g:
        A("## W1: %s files × 4 KiB in one job, from files present to all stored" %
          fmt(next(iter(g.values()))[0]["files"], 0))
        A("")
        A("outboxd: `outboxd --once` (start-up, rescan, journal, upload, exit). Peers: one command "
          "on the job's directory to `s3://outboxd-test/jobs/<job>/uploads/`. "
          "curl: one `curl --parallel --parallel-max 16 -K list` with `url`/`upload-file` pairs, "
          "`--aws-sigv4 aws:amz:us-east-1:s3` and `-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD'` "
          "(s3rver does not check signatures), the practical ceiling of the server. "
          "\"outboxd (S3 + database)\" also records every file in PostgreSQL (test settings, "
          "fsync off); the ratios compare outboxd (S3 only, default concurrency 16).")
        A("")
        order = [("s3rver", t) for t in ("outboxd", "outboxd-c8", "outboxd-c16", "outboxd+db", "rclone",
                                          "rclone-t16", "s3cmd", "aws", "curl-p16", "put-floor")]
        L.extend(throughput_table(g, order, None, "fps", lambda t: ("s3rver", "outboxd")))
        A("")
        fl = g.get(("s3rver", "put-floor"))
        if fl:
            A("The floor (`bench/put-floor.c`) reads, hashes, signs with outboxd's own signer and PUTs "
              "each file with libcurl's multi interface, 16 at a time over kept-alive connections, and "
              "does nothing else: no outbox, no checksum header, no log. Its CPU per file is what any "
              "libcurl client doing outboxd's work on the wire spends against this server on this "
              "machine; outboxd's CPU over it is what the outbox, the journal and the rest cost.")
            A("")
            fv = med(fl, "cpu_us")[0]
            parts = []
            for t in ("outboxd", "outboxd+db"):
                if g.get(("s3rver", t)) and fv:
                    v = med(g[("s3rver", t)], "cpu_us")[0]
                    parts.append("%s %s µs a file, %.2f× the floor's %s µs" % (
                        tname(t), fmt(v, 0), v / fv, fmt(fv, 0)))
            if parts:
                A("CPU against the floor: " + "; ".join(parts) + ".")
                A("")

    # ---- W2
    g2 = group(rows, "W2")
    if g2:
        rs = g2.get(("s3rver+pg", "outboxd"), [])
        A("## W2: a burst of %s files into 20 jobs while outboxd runs" %
          (fmt(rs[0]["files"], 0) if rs else "?"))
        A("")
        A("The daemon (S3 + database) is running and idle; the benchmark writes the files "
          "(20 job directories, created with their files, 4 KiB each) as fast as bash can; "
          "wall = from the first write to `outboxctl status` showing every entry done (polled "
          "every 0.2 s). Reference: curl --parallel-max 16 uploading the same number of files "
          "(S3 only, files already there).")
        A("")
        L.extend(throughput_table(g2, [("s3rver+pg", "outboxd"), ("s3rver", "curl-p16")], None,
                                  "fps", lambda t: ("s3rver+pg", "outboxd"),
                                  {"outboxd": "outboxd daemon (S3 + database)"}))
        A("")
        if rs:
            lost = sum(int(r["extra"].get("lost", "0") or 0) for r in rs)
            lost_rows = sum(int(r["extra"].get("lost_rows", "0") or 0) for r in rs)
            A("Writing the burst took %s s. Lost: %d objects and %d documents rows over %d rounds.%s"
              % (mmm(rs, lambda r: ex(r, "write_s")), lost, lost_rows, len(rs),
                 " An inotify queue overflow (and the rescan that follows) happened in %d round(s)."
                 % sum(1 for r in rs if "overflow" in r["extra"]) if any("overflow" in r["extra"] for r in rs) else ""))
            A("")

    # ---- W3
    g3 = group(rows, "W3")
    if g3:
        A("## W3: one large file")
        A("")
        A("One %.0f MiB file of random bytes, page cache warm. On s3rver the peers use their "
          "defaults (rclone, s3cmd and the AWS CLI switch to multipart uploads above 200 MiB, "
          "15 MiB and 8 MiB; s3rver assembles parts slowly); curl makes one signed PUT. "
          "s3rver itself is the bottleneck there, so the file also goes to a fast sink: nginx on "
          "loopback accepting PUT (WebDAV) into tmpfs, with canned replies for the multipart "
          "calls; signatures are not checked. The \"large file\" rows (%s MiB) are for outboxd's peak RSS. "
          "outboxd uses its defaults (multipart above OUTBOXD_MULTIPART_THRESHOLD=64MiB) and, "
          "as \"one PUT\", OUTBOXD_MULTIPART_THRESHOLD=5GiB to compare with curl's single PUT."
          % (next(r["bytes"] / MIB for rs in g3.values() for r in rs if r["target"] == "s3rver"),
             fmt(next((r["bytes"] / MIB for rs in g3.values() for r in rs if r["target"] == "sink-1g"), 0), 0)))
        A("")
        order = [("s3rver", t) for t in ("outboxd", "outboxd-1put", "rclone", "s3cmd", "aws", "curl")]
        order += [(t, tool) for t in ("sink", "sink-1g") for tool in ("outboxd", "outboxd-1put", "curl", "floor")]
        L.extend(throughput_table(g3, order, None, "mibs", lambda t: (t, "outboxd"),
                                  {"outboxd": "outboxd (defaults)"}, per_gib=True))
        A("")
        # The floor: a client that hashes what it sends, with the sink on
        # the other core, cannot beat curl -T run beside openssl dgst.
        for t in ("sink", "sink-1g"):
            s1, sc, sf = g3.get((t, "outboxd-1put")), g3.get((t, "curl")), g3.get((t, "floor"))
            if s1 and sc and sf:
                A("%s: outboxd as one PUT (streamed) is %s of curl -T and %s of the floor "
                  "(curl -T while `openssl dgst -sha256` hashes the same file: %s MiB/s)." % (
                      TARGET_NAMES.get(t, t), ratio(s1, sc, "mibs")[1], ratio(s1, sf, "mibs")[1],
                      fmt(med(sf, "mibs")[0])))
                A("")
        reqs = sorted({r["extra"].get("requests", "") for (t, tool), rs in g3.items()
                       if t.startswith("sink") and tool == "outboxd" for r in rs} - {""})
        if reqs:
            A("Requests outboxd made to the sink per file (nginx access log): %s." % ", ".join(reqs))
            A("")

    # ---- W4
    g4 = group(rows, "W4")
    rs4 = g4.get(("s3rver+pg", "outboxd"), [])
    if rs4:
        A("## W4: latency of single files")
        A("")
        A("%d files of 4 KiB written one at a time, one every 50 ms, while the daemon runs (S3 + "
          "database, default settle window OUTBOXD_SETTLE_MS=20). The writer (bash) records "
          "the time right after each file's `close()`. *Stored* is the mtime of s3rver's "
          "`._S3rver_metadata.json` for the object, which s3rver writes after the object's bytes "
          "and just before it answers the PUT. *Row* is the `documents.created_at` of the file's "
          "row, which PostgreSQL sets to `now()` at the start of the inserting transaction (a "
          "little before its commit). All clocks are the same machine's." % rs4[0]["files"])
        A("")
        A("| close() to | p50 ms | p99 ms | max ms |")
        A("|---|---|---|---|")
        for tag, label in (("s3", "object stored in S3"), ("db", "documents row")):
            A("| %s | %s | %s | %s |" % (label, mmm(rs4, lambda r: ex(r, tag + "_p50_ms"), 1),
                                         mmm(rs4, lambda r: ex(r, tag + "_p99_ms"), 1),
                                         mmm(rs4, lambda r: ex(r, tag + "_max_ms"), 1)))
        A("")
        A("outboxd over the whole run: %s CPU s per 1,000 files (idle time included), peak RSS %s MiB; runs ok: %s."
          % (mmm(rs4, "cpu_k"), mmm(rs4, "rss_mib", 1), okcount(rs4)))
        A("")

    # ---- W5
    g5 = group(rows, "W5")
    rs5 = g5.get(("s3rver", "outboxd"), [])
    if rs5:
        A("## W5: backlog of %s files while S3 is unreachable, then the drain" % fmt(rs5[0]["files"], 0))
        A("")
        A("The daemon (S3 only) points at a loopback port where nothing listens; the benchmark "
          "writes the files (jobs of up to 1,000 files); once `outboxctl status` shows them all journaled, a "
          "second s3rver starts on that port. Drain = from that s3rver answering to every entry "
          "done. Retry settings OUTBOXD_RETRY_BASE_MS=100, OUTBOXD_RETRY_MAX_S=1 (so the drain "
          "includes at most ~1 s of probe backoff; with the defaults it backs off up to OUTBOXD_RETRY_MAX_S=60 s).")
        A("")
        A("| | median (min–max) |")
        A("|---|---|")
        A("| writing + journaling, s | %s |" % mmm(rs5, lambda r: ex(r, "journal_s")))
        A("| journaled files/s | %s |" % mmm(rs5, lambda r: r["files"] / ex(r, "journal_s") if ex(r, "journal_s") else None))
        A("| outboxd CPU s while journaling | %s |" % mmm(rs5, lambda r: ex(r, "journal_cpu_s")))
        A("| drain, s | %s |" % mmm(rs5, "wall"))
        A("| drain files/s | %s |" % mmm(rs5, "fps"))
        A("| drain MiB/s | %s |" % mmm(rs5, "mibs"))
        A("| outboxd CPU s per 1,000 files, drain | %s |" % mmm(rs5, "cpu_k"))
        A("| outboxd peak RSS MiB after journaling | %s |" % mmm(rs5, lambda r: ex(r, "rss_journaled_kib") / 1024.0 if ex(r, "rss_journaled_kib") else None, 1))
        A("| outboxd peak RSS MiB, whole run | %s |" % mmm(rs5, "rss_mib", 1))
        A("| runs ok, lost | %s, %d |" % (okcount(rs5), sum(int(r["extra"].get("lost", "0") or 0) for r in rs5)))
        A("")

    # ---- W6
    g6 = group(rows, "W6")
    if g6:
        A("## W6: database only")
        A("")
        A("`outboxd --once` with DATABASE_URL and no S3_BUCKET, on %s files in 10 jobs. The rate is "
          "files over the sync part: from the log line `journaled N new or changed files` to "
          "`done:` (OUTBOXD_LOG_FORMAT=json, millisecond timestamps). PostgreSQL is the tests' "
          "instance (shared_buffers 32 MB, loopback TCP), once made durable (fsync, "
          "synchronous_commit and full_page_writes on, by ALTER SYSTEM and reload) and once as "
          "the tests run it (all three off). Commits (pg_stat_database.xact_commit) and WAL "
          "flushes (pg_stat_wal.wal_sync) are counted over the whole run, divided by the files; "
          "with fsync off PostgreSQL counts no flushes." % fmt(next(iter(g6.values()))[0]["files"], 0))
        A("")
        A("| PostgreSQL | runs ok | sync part s | files/s | whole run s | CPU s / 1,000 files | peak RSS MiB | commits per file | WAL flushes per file |")
        A("|---|---|---|---|---|---|---|---|---|")
        for t in ("pg-durable", "pg-harness"):
            rs = g6.get((t, "outboxd"))
            if rs:
                A("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    TARGET_NAMES[t], okcount(rs), mmm(rs, "t"), mmm(rs, "fps"), mmm(rs, "wall"),
                    mmm(rs, "cpu_k"), mmm(rs, "rss_mib", 1),
                    mmm(rs, lambda r: ex(r, "pg_commits") / r["files"] if ex(r, "pg_commits") is not None else None),
                    mmm(rs, lambda r: ex(r, "wal_syncs") / r["files"] if ex(r, "wal_syncs") is not None else None)))
        A("")

    # ---- W7
    g7 = group(rows, "W7")
    w7 = w7_tables(g7, A, L) if g7 else []

    # ---- issues
    bad = issues(rows)
    if bad:
        A("## Runs that were not clean")
        A("")
        L.extend(bad)
        A("")

    # ---- goals
    A("## Goals")
    A("")
    A("| goal | measured | |")
    A("|---|---|---|")

    def goal(text, measured, ok):
        A("| %s | %s | %s |" % (text, measured, verdict(ok)))

    if g:
        ob = g.get(("s3rver", "outboxd"), [])
        obdb = g.get(("s3rver", "outboxd+db"), [])
        rc = g.get(("s3rver", "rclone"), [])
        cu = g.get(("s3rver", "curl-p16"), [])
        r1, _ = ratio(ob, rc, "fps") if ob and rc else (None, "")
        r1d, _ = ratio(obdb, rc, "fps") if obdb and rc else (None, "")
        goal("W1 ≥ 2× rclone's default files/s",
             "%.2f× (S3 only), %.2f× (S3 + database)" % (r1 or 0, r1d or 0) if r1 else "–",
             None if r1 is None else r1 >= 2)
        r2, _ = ratio(ob, cu, "fps") if ob and cu else (None, "")
        r2d, _ = ratio(obdb, cu, "fps") if obdb and cu else (None, "")
        goal("W1 ≥ 90% of curl's parallel rate",
             "%.0f%% (S3 only), %.0f%% (S3 + database)" % (100 * (r2 or 0), 100 * (r2d or 0)) if r2 else "–",
             None if r2 is None else r2 >= 0.9)
    if g3:
        so, sc = g3.get(("sink", "outboxd")), g3.get(("sink", "curl"))
        s1 = g3.get(("sink", "outboxd-1put"))
        r3, _ = ratio(so, sc, "mibs") if so and sc else (None, "")
        r31, _ = ratio(s1, sc, "mibs") if s1 and sc else (None, "")
        txt = "–"
        if r3:
            txt = "%.0f%% with defaults (%s vs %s MiB/s)" % (100 * r3, fmt(med(so, "mibs")[0]), fmt(med(sc, "mibs")[0]))
            if r31:
                txt += "; %.0f%% as one PUT (%s MiB/s)" % (100 * r31, fmt(med(s1, "mibs")[0]))
            sf = g3.get(("sink", "floor"))
            r3f, _ = ratio(s1, sf, "mibs") if s1 and sf else (None, "")
            if r3f:
                txt += ", %.0f%% of the floor (curl -T beside openssl dgst: %s MiB/s)" % (
                    100 * r3f, fmt(med(sf, "mibs")[0]))
        goal("W3 ≥ 90% of a single curl PUT on the fast sink", txt, None if r3 is None else r3 >= 0.9)
    if rs4:
        p50s, p99s = med(rs4, lambda r: ex(r, "s3_p50_ms"))[0], med(rs4, lambda r: ex(r, "s3_p99_ms"))[0]
        p50d, p99d = med(rs4, lambda r: ex(r, "db_p50_ms"))[0], med(rs4, lambda r: ex(r, "db_p99_ms"))[0]
        goal("W4 p50 ≤ 40 ms and p99 ≤ 100 ms (default settle window)",
             "to S3: p50 %s, p99 %s ms; to the row: p50 %s, p99 %s ms" % (
                 fmt(p50s, 1), fmt(p99s, 1), fmt(p50d, 1), fmt(p99d, 1)),
             None if p50s is None else (p50s <= 40 and p99s <= 100 and p50d <= 40 and p99d <= 100))
    cpu_parts, cpu_ok = [], None
    if g and g.get(("s3rver", "outboxd")):
        v = med(g[("s3rver", "outboxd")], "cpu_us")[0]
        txt = "W1 --once, S3 only: %s µs (goal 150)" % fmt(v, 0)
        if g.get(("s3rver", "put-floor")):
            txt += ", the floor %s µs" % fmt(med(g[("s3rver", "put-floor")], "cpu_us")[0], 0)
        cpu_parts.append(txt)
        cpu_ok = v <= 150
    if g2 and g2.get(("s3rver+pg", "outboxd")):
        v = med(g2[("s3rver+pg", "outboxd")], "cpu_us")[0]
        cpu_parts.append("W2 daemon, S3 + database: %s µs (goal 300)" % fmt(v, 0))
        cpu_ok = (cpu_ok if cpu_ok is not None else True) and v <= 300
    if g and g.get(("s3rver", "outboxd+db")):
        v = med(g[("s3rver", "outboxd+db")], "cpu_us")[0]
        cpu_parts.append("W1 --once, S3 + database: %s µs" % fmt(v, 0))
    if cpu_parts:
        goal("≤ 150 µs of outboxd CPU per 4 KiB file (`--once`, S3 only); ≤ 300 µs in the W2 daemon burst",
             "; ".join(cpu_parts), cpu_ok)
    rss_parts, rss_ok = [], None
    if g3 and g3.get(("sink-1g", "outboxd")):
        v = med(g3[("sink-1g", "outboxd")], "rss_mib")[2]
        rss_parts.append("1 GiB file: %s MiB" % fmt(v, 1))
        rss_ok = v <= 20
    if rs5:
        v = med(rs5, "rss_mib")[2]
        rss_parts.append("%s-file backlog: %s MiB" % (fmt(rs5[0]["files"], 0), fmt(v, 1)))
        rss_ok = (rss_ok if rss_ok is not None else True) and v <= 20
    if rss_parts:
        goal("peak RSS ≤ 20 MiB for a 1 GiB file and for the 50k backlog (worst round)",
             "; ".join(rss_parts), rss_ok)
    if g6:
        parts, ok6 = [], None
        for t in ("pg-durable", "pg-harness"):
            rs = g6.get((t, "outboxd"))
            if rs:
                v = med(rs, "fps")[0]
                parts.append("%s: %s files/s" % ("durable" if t == "pg-durable" else "fsync off", fmt(v, 0)))
                ok6 = (ok6 if ok6 is not None else True) and v >= 2000
        goal("W6 ≥ 2,000 files/s", "; ".join(parts), ok6)
    for rtt, kind, text, r, need in w7:
        goal(text, "%.2f×" % r if r else "–", None if r is None else r >= need)
    if g7:
        hs = [ex(r, "handshakes") for (t, tool), rs in g7.items() if tool.startswith("outboxd")
              for r in rs if ex(r, "handshakes") is not None]
        if hs:
            goal("W7: ≤ 16 TLS handshakes for a whole outboxd run", "at most %d (of them resumed: %s)" % (
                max(hs), ", ".join(sorted({r["extra"].get("resumed", "?") for (t, tool), rs in g7.items()
                                           if tool.startswith("outboxd") for r in rs}))), max(hs) <= 16)
    if g2 and g2.get(("s3rver+pg", "outboxd")):
        rs = g2[("s3rver+pg", "outboxd")]
        lost = sum(int(r["extra"].get("lost", "0") or 0) + int(r["extra"].get("lost_rows", "0") or 0) for r in rs)
        goal("W2 zero lost", "%d lost over %d rounds (objects and rows counted)" % (lost, len(rs)),
             lost == 0 and all(r["ok"] for r in rs))
    A("")

    for path in notes:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().rstrip("\n")
            # The notes are written by hand for one run; a run of another
            # commit gets them as that run's analysis, said so at the top
            # (their "this run" is not this one).
            m = re.search(r"commit `([0-9a-f]{7,40})`", text)
            mine = meta.get("commit", "")
            if m and not (mine.startswith(m.group(1)) or m.group(1).startswith(mine or "-")):
                A("> The analysis below was written for the run of commit `%s`, not for this "
                  "run (`%s`): its figures are that run's; this run's are in the tables above."
                  % (m.group(1), mine or "?"))
                A("")
            A(text)
            A("")

    with open(os.path.join(outdir, "RESULTS.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    chart(rows, meta, outdir)


# ---------------------------------------------------------------- the chart

COLORS = {"outboxd": 0xd62728, "peer": 0x1f77b4, "curl": 0x7f7f7f}


def color(tool):
    if tool.startswith("outboxd"):
        return COLORS["outboxd"]
    if tool.startswith("curl"):
        return COLORS["curl"]
    return COLORS["peer"]


SHORT = {
    "outboxd": "outboxd", "outboxd-c16": "outboxd c=16", "outboxd-c8": "outboxd c=8", "outboxd+db": "outboxd S3+DB",
    "rclone": "rclone", "rclone-t16": "rclone t=16", "s3cmd": "s3cmd", "aws": "aws cli",
    "curl-p16": "curl -Z 16", "curl": "curl PUT", "outboxd-1put": "outboxd 1 PUT",
    "aws-c16": "aws cli c=16", "floor": "curl PUT + sha256", "put-floor": "libcurl floor",
}


def chart(rows, meta, outdir):
    tmp = tempfile.mkdtemp(prefix="bench-chart.")
    panels = []

    def bars(name, entries, metric, title, ylabel, goal=None):
        path = os.path.join(tmp, name + ".dat")
        n, x = 0, 0.0
        with open(path, "w") as f:
            for label, rs in entries:
                if label is None:       # a gap between groups
                    x += 0.6 if n else 0
                    continue
                if not rs:
                    continue
                m, lo, hi = med(rs, metric)
                if m is None:
                    continue
                f.write('"%s" %.3f %.3f %.3f %d %.2f\n' % (label, m, lo, hi, color(rs[0]["tool"]), x))
                n += 1
                x += 1
        if n:
            panels.append((path, title, ylabel, goal))

    g = group(rows, "W1")
    w1n = next((r["files"] for r in rows if r["workload"] == "W1"), 0)
    bars("w1", [(SHORT[t], g.get(("s3rver", t))) for t in
                ("outboxd", "outboxd-c8", "outboxd+db", "rclone", "rclone-t16", "s3cmd", "aws", "curl-p16", "put-floor")],
         "fps", "W1: %s × 4 KiB files in one job, to s3rver" % "{:,}".format(w1n), "files/s")
    g3 = group(rows, "W3")
    ent = [(SHORT[t] + " ", g3.get(("s3rver", t))) for t in ("outboxd", "outboxd-1put", "rclone", "s3cmd", "aws", "curl")]
    ent += [(None, None)]
    ent += [("sink: " + SHORT[t], g3.get(("sink", t))) for t in ("outboxd", "outboxd-1put", "curl", "floor")]
    w3mib = next((r["bytes"] / MIB for r in rows if r["workload"] == "W3" and r["target"] == "s3rver"), 0)
    bars("w3", ent, "mibs", "W3: one %.0f MiB file, to s3rver | to the nginx sink" % w3mib, "MiB/s")
    g4 = group(rows, "W4").get(("s3rver+pg", "outboxd"), [])
    if g4:
        path = os.path.join(tmp, "w4.dat")
        with open(path, "w") as f:
            for tag, label in (("s3", "close→S3"), ("db", "close→row")):
                for i, p in enumerate(("p50", "p99")):
                    m, lo, hi = med(g4, lambda r: ex(r, "%s_%s_ms" % (tag, p)))
                    if m is not None:
                        f.write('"%s %s" %.3f %.3f %.3f %d %.2f\n' % (
                            label, p, m, lo, hi, COLORS["outboxd"] if p == "p50" else 0xff9896,
                            i + (2.6 if tag == "db" else 0)))
        panels.append((path, "W4: latency, one file every 50 ms (goals: p50 40, p99 100)", "ms", [40, 100]))
    ent = []
    g2 = group(rows, "W2")
    ent.append(("W2 burst drain", g2.get(("s3rver+pg", "outboxd"))))
    ent.append(("W2 curl -Z 16", g2.get(("s3rver", "curl-p16"))))
    ent.append((None, None))
    ent.append(("W5 backlog drain", group(rows, "W5").get(("s3rver", "outboxd"))))
    ent.append((None, None))
    g6 = group(rows, "W6")
    ent.append(("W6 DB durable", g6.get(("pg-durable", "outboxd"))))
    ent.append(("W6 DB fsync off", g6.get(("pg-harness", "outboxd"))))
    bars("rates", ent, "fps", "W2, W5, W6: outboxd daemon and database rates (W6 goal 2,000)", "files/s", [2000])
    g7 = group(rows, "W7")
    if g7:
        ent = []
        for target in sorted({t for t, _ in g7 if t.startswith("backlog")}, key=lambda t: int(t.split("-")[1])):
            if ent:
                ent.append((None, None))
            ent += [("+%s ms: %s" % (target.split("-")[1], SHORT[t]), g7.get((target, t)))
                    for t in ("outboxd", "outboxd-c16", "rclone", "rclone-t16", "aws", "aws-c16", "s3cmd", "curl-p16")]
        bars("w7", ent, "fps", "W7: backlog of 4 KiB files over HTTPS with added round trips", "files/s")
    if not panels:
        return
    cols = 2
    nrows = (len(panels) + 1) // 2
    gp = ["set terminal pngcairo size 1600,%d font 'DejaVu Sans,11' noenhanced" % (520 * nrows),
          "set output '%s'" % os.path.join(outdir, "results.png"),
          "set multiplot layout %d,%d title 'outboxd %s vs peers, median of %s rounds, bars min–max; %s' font ',13'"
          % (nrows, cols, meta.get("commit", "") + "".join(
              " (%s: %s)" % (k[len("separate "):], meta[k].split(",")[0].replace("commit ", "").strip("`"))
              for k in sorted(meta) if k.startswith("separate ")),
             meta.get("rounds", "?"), meta.get("date", "")[:10]),
          "set style fill solid 0.85 border -1",
          "set boxwidth 0.7",
          "set grid ytics lc rgb '#dddddd'",
          "set xtics rotate by 30 right nomirror",
          "set ytics nomirror",
          "set key off",
          "set yrange [0:*]",
          "set bmargin 7",
          "set offsets 0.5, 0.5, 0, 0"]
    for path, title, ylabel, goals in panels:
        # a fixed range that shows the goal lines (an arrow outside the
        # range would be drawn over the neighbouring panel)
        top = 0.0
        with open(path) as f:
            for line in f:
                top = max(top, float(line.rsplit('"', 1)[1].split()[2]))
        top = max([top * 1.15] + [gv * 1.1 for gv in goals or []]) or 1
        gp.append("set yrange [0:%g]" % top)
        gp.append("set title '%s'" % title)
        gp.append("set ylabel '%s'" % ylabel)
        gp.append("unset arrow")
        for gv in goals or []:
            gp.append("set arrow from graph 0, first %g to graph 1, first %g nohead dt 2 lc rgb '#444444'" % (gv, gv))
        gp.append("plot '%s' using 6:2:5:xtic(1) with boxes lc rgb variable, "
                  "'' using 6:2:3:4 with yerrorbars lc rgb 'black' pt 7 ps 0.4, "
                  "'' using 6:4:(sprintf('%%.0f', $2)) with labels offset 0,0.8 font ',9'" % path)
    gp.append("unset multiplot")
    script = os.path.join(tmp, "chart.gp")
    with open(script, "w") as f:
        f.write("\n".join(gp) + "\n")
    subprocess.run(["gnuplot", script], check=True)
    for fn in os.listdir(tmp):
        os.unlink(os.path.join(tmp, fn))
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
