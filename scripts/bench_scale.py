#!/usr/bin/env python3
"""The scale benchmark behind scripts/bench-scale.sh (issue 9; release build, local bare
remote). For the CLIProxyAPI profile and the native one, in one run:

- `record` of 10 events + `sync` on a 100,000-request history vs the same on a 1,000-request
  history (goal <= 2x), the two alternating so that both see the same load;
- growth of the bare remote per such sync, before any gc: objects and bytes added under
  objects/ (goal <= 200 KB);
- `record` with an `id` at 100,000 remembered ids vs `record` without an id (goal <= 1.5x).

Each history is recorded in one batch (distinct ids, timestamps spread evenly over the DAYS
UTC days before today), then synced. The measured events land in the last of those days,
which already holds the day's full volume (1,000 requests at 100k over 100 days): the
worst moment of a day for a per-day shard. `--fresh-day` puts them in today's shard,
empty before the first run, instead.

  bench_scale.py BIN [--runs N] [--days D] [--fresh-day] [--quick]"""
import json, os, resource, shutil, statistics, subprocess, sys, tempfile, time

BIN = os.path.abspath(sys.argv[1])
args = sys.argv[2:]
def opt(name, default):
    return type(default)(args[args.index(name) + 1]) if name in args else default
QUICK = "--quick" in args
RUNS = opt("--runs", 3 if QUICK else 9)
DAYS = opt("--days", 100)
FRESH = "--fresh-day" in args
SIZES = (1000, 20_000) if QUICK else (1000, 100_000)
ID_RUNS = 10 if QUICK else 40
PHASE_RUNS = 1 if QUICK else 3

work = tempfile.mkdtemp(prefix="bench-scale-")
ENV = dict(os.environ, GIT_CONFIG_GLOBAL=os.path.join(work, "gitconfig"), GIT_CONFIG_SYSTEM="/dev/null",
           GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@e", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@e")
ENV.pop("GIT_TALLY_TRACE", None)
open(ENV["GIT_CONFIG_GLOBAL"], "w").write("[commit]\n\tgpgsign = false\n[init]\n\tdefaultBranch = main\n")

def run(*cmd, cwd=None, input=None):
    r = subprocess.run(cmd, cwd=cwd, env=ENV, input=input, capture_output=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr.decode()}")
    return r

def cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime

def clock(fn):
    """(wall s, CPU s of the processes waited for)."""
    c, t = cpu(), time.perf_counter(); fn()
    return time.perf_counter() - t, cpu() - c

def med(samples, i=0):
    return statistics.median(s[i] for s in samples)

def objects(remote):
    """(objects, bytes) under the remote's objects/: loose objects and packs."""
    n = size = 0
    root = os.path.join(remote, "objects")
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            size += os.stat(p).st_size
            if len(os.path.basename(dirpath)) == 2 and len(f) == 38:
                n += 1
    for line in subprocess.run(["git", "count-objects", "-v"], cwd=remote, env=ENV, capture_output=True,
                               text=True).stdout.splitlines():
        if line.startswith("in-pack:"):
            n += int(line.split()[1])
    return n, size

APIS = ["openai-compat", "gemini-cli", "claude-code", "codex"]
MODELS = ["gpt-5", "gemini-2.5-pro", "claude-sonnet-4-5", "claude-opus-4-1", "gpt-5-codex"]
DAY = 86400
today = int(time.time()) // DAY * DAY
start = today - DAYS * DAY

def event(i, ts, prefix="h", with_id=True):
    e = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)), "api": APIS[i % 4],
         "provider": "openai", "model": MODELS[i % 5], "source": f"acct{1 + i % 6}@example.com",
         "auth_index": str(i % 10), "input_tokens": 10 + (i * 7919) % 50_000, "output_tokens": 1 + (i * 104_729) % 8000,
         "reasoning_tokens": (i * 31) % 2001, "cached_tokens": (i * 17) % 1000, "status": 500 if i % 20 == 0 else 200}
    if with_id:
        e["id"] = f"{prefix}-{i}"
    return json.dumps(e)

def history(n):
    step = DAYS * DAY / n
    return ("\n".join(event(i, start + int(i * step)) for i in range(n)) + "\n").encode()

def clone(profile, size):
    root = os.path.join(work, f"{profile}-{size}")
    remote = os.path.join(root, "remote.git")
    run("git", "init", "-q", "--bare", "-b", "main", remote)
    d = os.path.join(root, "m")
    run("git", "clone", "-q", "file://" + remote, d)
    for k, v in (("tally.device", "m"), ("tally.profile", profile)):
        run("git", "config", k, v, cwd=d)
    t = time.perf_counter()
    run(BIN, "record", cwd=d, input=history(size))
    rec = time.perf_counter() - t
    t = time.perf_counter()
    run(BIN, "sync", cwd=d)
    print(f"  {profile}, {size:,} requests: history recorded in {rec:.1f} s, first sync {time.perf_counter() - t:.1f} s",
          file=sys.stderr, flush=True)
    return remote, d

GIT = shutil.which("git")
shim = os.path.join(work, "shim")
os.makedirs(shim)
with open(os.path.join(shim, "git"), "w") as f:
    # Logs when each git process git-tally starts begins and ends (bash: $EPOCHREALTIME).
    f.write(f'#!/bin/bash\nt0=$EPOCHREALTIME\n{GIT} "$@"\nrc=$?\n'
            f'echo "$t0 $EPOCHREALTIME $*" >> "$GIT_SHIM_LOG"\nexit $rc\n')
os.chmod(os.path.join(shim, "git"), 0o755)

def phases(d):
    """One sync with the timing shim first on PATH: where its wall time goes (ms)."""
    log = os.path.join(work, "phases.log")
    open(log, "w").close()
    env = dict(ENV, PATH=shim + os.pathsep + ENV["PATH"], GIT_SHIM_LOG=log)
    t0 = time.time()
    subprocess.run([BIN, "sync"], cwd=d, env=env, check=True, capture_output=True)
    t1 = time.time()
    spans = []
    for line in open(log):
        a, b, *cmd = line.split()
        while cmd and cmd[0] in ("-C", "-c"):
            cmd = cmd[2:]
        spans.append((float(a), float(b), cmd[0]))
    out, at = [], t0
    for a, b, name in sorted(spans):
        out.append((f"before {name}", a - at)); out.append((name, b - a)); at = b
    out.append(("after", t1 - at))
    return out

def phase_medians(runs):
    """Per-phase medians (ms) of several `phases` runs, as text."""
    names = [n for n, _ in runs[0]]
    if any([n for n, _ in r] != names for r in runs):
        return " || ".join(" | ".join(f"{n} {v*1000:.0f}" for n, v in r) for r in runs)
    return " | ".join(f"{n} {statistics.median(r[i][1] for r in runs)*1000:.0f}" for i, n in enumerate(names))

def requests(d, profile):
    doc = json.load(open(os.path.join(d, "usage", "usage.json")))
    return doc["total_requests"] if profile == "cliproxyapi" else doc["totals"]["requests"]

load_start = os.getloadavg()
t_setup = time.perf_counter()
results = {}
seq = [0]
for profile in ("cliproxyapi", "tally"):
    clones = {size: clone(profile, size) for size in SIZES}
    rs = {size: [] for size in SIZES}
    growth = {size: [] for size in SIZES}
    for r in range(RUNS):
        for size, (remote, d) in clones.items():
            seq[0] += 1
            base = today + 12 * 3600 if FRESH else today - 3600      # today, or the last hour of the full day
            batch = ("\n".join(event(10 * seq[0] + j, base + (seq[0] * 10 + j) % 3600, prefix="n")
                               for j in range(10)) + "\n").encode()
            before = objects(remote)
            rec = clock(lambda: run(BIN, "record", cwd=d, input=batch))
            syn = clock(lambda: run(BIN, "sync", cwd=d))
            after = objects(remote)
            rs[size].append((rec[0] + syn[0], rec[1] + syn[1], rec[0], syn[0]))
            growth[size].append((after[0] - before[0], after[1] - before[1]))
    breakdown = {}
    for size, (_, d) in clones.items():
        runs_ = []
        for k in range(PHASE_RUNS):
            run(BIN, "record", cwd=d, input=(event(999_000 + k, today - 1800, prefix="p") + "\n").encode())
            runs_.append(phases(d))
        breakdown[size] = phase_medians(runs_)
        want = size + 10 * RUNS + PHASE_RUNS
        if requests(d, profile) != want:
            sys.exit(f"{profile} {size}: the view counts {requests(d, profile)} requests, expected {want}")

    # record with an id at `big` remembered ids vs without an id, alternating.
    big = SIZES[-1]
    _, d = clones[big]
    with_id, without = [], []
    for i in range(ID_RUNS):
        ts = today + 6 * 3600 + i
        with_id.append(clock(lambda: run(BIN, "record", "--event", event(i, ts, prefix="x"), cwd=d)))
        without.append(clock(lambda: run(BIN, "record", "--event", event(i, ts, with_id=False), cwd=d)))
    ids = sum(1 for f in os.listdir(os.path.join(d, ".git", "tally", "ids")) for _ in open(os.path.join(d, ".git", "tally", "ids", f)))
    results[profile] = (rs, growth, with_id, without, ids, breakdown)
setup_total = time.perf_counter() - t_setup

small, big = SIZES
print(f"bench-scale: medians of {RUNS} runs per size (record of 10 events + sync; remote growth per sync),"
      f" {ID_RUNS} per record variant; history over {DAYS} days; new events "
      + ("in today's shard (fresh)" if FRESH else f"in a day already holding {big // DAYS:,} (or {small // DAYS:,}) requests"))
print("wall time, CPU time of the processes waited for in parentheses")
hdr = f"{'profile':<12} {'measure':<44} {'value':>26} {'baseline (same run)':>28} {'ratio':>12}  goal"
print(hdr)
for profile, (rs, growth, with_id, without, ids, breakdown) in results.items():
    name = "CLIProxyAPI" if profile == "cliproxyapi" else "native"
    b, s = rs[big], rs[small]
    print(f"{name:<12} {f'record 10 + sync at {big:,} vs {small:,} requests':<44} "
          f"{f'{med(b)*1000:.0f} ms (CPU {med(b, 1)*1000:.0f})':>26} {f'{med(s)*1000:.0f} ms (CPU {med(s, 1)*1000:.0f})':>28} "
          f"{f'{med(b)/med(s):.2f} ({med(b, 1)/med(s, 1):.2f})':>12}  <= 2")
    print(f"{'':<12} {'  of which record / sync (wall)':<44} {f'{med(b, 2)*1000:.0f} / {med(b, 3)*1000:.0f} ms':>26} "
          f"{f'{med(s, 2)*1000:.0f} / {med(s, 3)*1000:.0f} ms':>28}")
    gb, gs = growth[big], growth[small]
    print(f"{'':<12} {f'remote growth per sync at {big:,} (at {small:,})':<44} "
          f"{f'{med(gb, 1)/1024:.1f} KB, {med(gb):.0f} objects':>26} {f'{med(gs, 1)/1024:.1f} KB, {med(gs):.0f} objects':>28} "
          f"{'':>12}  <= 200 KB (max {max(g[1] for g in gb)/1024:.1f} KB)")
    w, wo = (med(with_id), med(with_id, 1)), (med(without), med(without, 1))
    print(f"{'':<12} {f'record with an id at {ids:,} remembered ids':<44} "
          f"{f'{w[0]*1000:.1f} ms (CPU {w[1]*1000:.1f})':>26} {f'without an id: {wo[0]*1000:.1f} ms (CPU {wo[1]*1000:.1f})':>28} "
          f"{f'{w[0]/wo[0]:.2f} ({w[1]/wo[1]:.2f})':>12}  <= 1.5")
print(f"where one sync's wall time goes (medians of {PHASE_RUNS}, ms; a timing git shim: before fetch = start-up, lock, fold,"
      " commit; between fetch and push = integrate, write the views):")
for profile, r in results.items():
    for size, b in r[5].items():
        print(f"  {profile:<12} {size:>7,}: {b}")
print(f"setup and runs: {setup_total:.0f} s; load average (1, 5, 15 min) at the start: "
      f"{' '.join(f'{x:.1f}' for x in load_start)}; at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
shutil.rmtree(work)
