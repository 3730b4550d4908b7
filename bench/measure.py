#!/usr/bin/python3
"""measure.py OUT -- CMD [ARGS...]

Runs CMD (stdin, stdout and stderr inherited) and writes one line to OUT:

    wall_s user_s sys_s maxrss_kib exit_status

wall_s is monotonic time from fork to reap; user_s, sys_s and maxrss_kib
come from wait4()'s rusage, which covers CMD and every descendant it
waited for (all threads included), with microsecond resolution (better
than /usr/bin/time's 10 ms). maxrss_kib is the peak resident set of the
largest process in that tree. Exits 0 whatever CMD did: the caller reads
exit_status from OUT.
"""
import os
import sys
import time


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.stderr.write(__doc__)
        return 64
    out, cmd = sys.argv[1], sys.argv[3:]
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        f.write("%.6f %.6f %.6f %d %d\n" % (wall, ru.ru_utime, ru.ru_stime,
                                             ru.ru_maxrss, rc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
