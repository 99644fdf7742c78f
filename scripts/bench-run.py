#!/usr/bin/env python3
"""Times a command: bench-run.py RUNS [--prepare 'cmd'] -- CMD... [--vs CMD2...]
Prints the median wall time (s), the largest peak RSS (KiB) and the median CPU time (user +
system, s) of the runs. With --vs, CMD2 is timed too, alternating with CMD run by run so
that both see the same load on a shared machine, and its three figures follow.
--prepare runs before each timed run of CMD, untimed (e.g. restore the file a driver
rewrites)."""
import os, statistics, subprocess, sys, time

def once(cmd):
    t = time.perf_counter()
    p = subprocess.Popen(cmd)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        sys.exit(f"command failed ({status}): {' '.join(cmd)}")
    return wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime

def main():
    runs = int(sys.argv[1]); rest = sys.argv[2:]
    prepare = None
    if rest[0] == "--prepare":
        prepare, rest = rest[1], rest[2:]
    cmd = rest[rest.index("--") + 1:]
    cmds = [cmd[:cmd.index("--vs")], cmd[cmd.index("--vs") + 1:]] if "--vs" in cmd else [cmd]
    samples = [[] for _ in cmds]
    for _ in range(runs):
        for i, c in enumerate(cmds):
            if prepare and i == 0:
                subprocess.run(prepare, shell=True, check=True)
            samples[i].append(once(c))
    print(" ".join(f"{statistics.median(s[0] for s in ss):.4f} {max(s[1] for s in ss)} {statistics.median(s[2] for s in ss):.4f}"
                   for ss in samples))

if __name__ == "__main__":
    main()
