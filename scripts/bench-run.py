#!/usr/bin/env python3
"""Times a command: bench-run.py RUNS [--prepare 'cmd'] -- CMD...
Prints the median wall time (s) and the largest peak RSS (KiB) of the runs.
--prepare runs before each timed run, untimed (e.g. restore the file a driver rewrites)."""
import resource, statistics, subprocess, sys, time

def main():
    runs = int(sys.argv[1]); rest = sys.argv[2:]
    prepare = None
    if rest[0] == "--prepare":
        prepare, rest = rest[1], rest[2:]
    cmd = rest[rest.index("--") + 1:]
    times, rss = [], 0
    for _ in range(runs):
        if prepare:
            subprocess.run(prepare, shell=True, check=True)
        t = time.perf_counter()
        p = subprocess.Popen(cmd)
        _, status, usage = __import__("os").wait4(p.pid, 0)
        times.append(time.perf_counter() - t)
        if status != 0:
            sys.exit(f"command failed ({status}): {' '.join(cmd)}")
        rss = max(rss, usage.ru_maxrss)
    print(f"{statistics.median(times):.4f} {rss}")

if __name__ == "__main__":
    main()
