#!/usr/bin/env python3
"""Behind scripts/bench-import.sh: generates the inputs, runs git-tally, prints medians."""
import json, os, random, shutil, statistics, subprocess, sys, tempfile, time

BIN = os.path.abspath(sys.argv[1])
work = tempfile.mkdtemp(prefix="bench-import-")
ENV = dict(os.environ, GIT_CONFIG_GLOBAL=os.path.join(work, "gitconfig"), GIT_CONFIG_SYSTEM="/dev/null")
open(ENV["GIT_CONFIG_GLOBAL"], "w").write("[user]\n\tname = b\n\temail = b@e\n[init]\n\tdefaultBranch = main\n")

def run(*cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True)
    if r.returncode:
        sys.exit(f"failed: {cmd}: {r.stderr.decode()}")
    return r

rng = random.Random(1)
def line(f, m, out, t):
    return json.dumps({"parentUuid": "%032x" % rng.getrandbits(128), "isSidechain": False, "userType": "external",
        "cwd": f"/home/dev/work/proj{f % 7}", "sessionId": f"s{f}", "version": "2.1.39", "gitBranch": "main",
        "message": {"model": "claude-sonnet-4-5", "id": f"msg_{f}_{m}", "type": "message", "role": "assistant",
                    "content": [{"type": "text", "text": "x" * rng.randint(10, 400)}],
                    "usage": {"input_tokens": 3, "cache_creation_input_tokens": 2285, "cache_read_input_tokens": 22137, "output_tokens": out}},
        "requestId": f"req_{f}_{m}", "type": "assistant", "uuid": "%032x" % rng.getrandbits(128), "timestamp": t}) + "\n"

def tree(root, files, lines, start=0):
    size = 0
    for f in range(files):
        d = os.path.join(root, "projects", f"-home-dev-work-proj{f % 7}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"session-{f}.jsonl"), "a") as fh:
            n, m = 0, start
            while n < lines:
                m += 1
                parts = rng.choice([1, 1, 2, 3])
                for k in range(parts):
                    s = line(f, m, rng.randint(1, 50) if k < parts - 1 else rng.randint(50, 4000), f"2026-10-{1 + m % 28:02d}T08:00:00Z")
                    fh.write(s); size += len(s); n += 1
    return size

data = os.path.join(work, "claude")
total = tree(data, 200, 1000)
repo = os.path.join(work, "repo")
run("git", "init", "-q", repo)
t = time.perf_counter(); run(BIN, "import", "claude-code", data, cwd=repo); full = time.perf_counter() - t
extra = tree(data, 200, 10, start=10_000)
t = time.perf_counter(); out = run(BIN, "import", "claude-code", data, cwd=repo); incr = time.perf_counter() - t
# Two years of daily data in the native format: 730 days x 3 devices x 2 providers x 3 models.
days = {}
for d in range(730):
    day = time.strftime("%Y-%m-%d", time.gmtime(1_700_000_000 + d * 86400))
    days[day] = {dev: {p: {m: {"requests": 10, "failed": 0, "input_tokens": 1000, "output_tokens": 100, "reasoning_tokens": 0,
                                  "cached_tokens": 0, "total_tokens": 1100, "cost_usd": 0.5} for m in ("a", "b", "c")}
                       for p in ("openai", "anthropic")} for dev in ("laptop", "server", "ci")}
native = {"format": "git-tally/1", "recent_limit": 500, "totals": {"requests": 730 * 180}, "days": days, "devices": {}, "recent": []}
nf = os.path.join(work, "native.json")
json.dump(native, open(nf, "w"), indent=2)
st = []
for _ in range(15):
    t = time.perf_counter(); run(BIN, "stats", nf); st.append(time.perf_counter() - t)
print(f"{'measure':<44} {'value':>14}  target")
print(f"{'import, full (%.0f MB, 200 files)' % (total / 1e6):<44} {total / 1e6 / full:>9.1f} MB/s  >= 120 MB/s   ({full:.2f} s)")
print(f"{'import, incremental (+%.1f MB appended)' % (extra / 1e6):<44} {100 * incr / full:>12.1f} %  <= 5% of full ({incr:.3f} s)")
print(f"{'stats over two years of daily native data':<44} {statistics.median(st) * 1000:>11.1f} ms  <= 50 ms (median of 15, %d KB file)" % (os.path.getsize(nf) // 1024))
shutil.rmtree(work)
