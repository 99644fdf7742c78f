#!/usr/bin/env python3
"""The write-path and sync benchmark behind scripts/bench-sync.sh (release build, local
bare remote). Every figure is a median measured in this run, beside its baseline measured
in the same run, interleaved with it where the two can alternate (the machine is shared).

  bench_sync.py BIN [--quick]   (--quick: fewer runs, to check that the script works)"""
import json, os, resource, shutil, signal, statistics, subprocess, sys, tempfile, time

BIN = os.path.abspath(sys.argv[1])
QUICK = "--quick" in sys.argv
N = (lambda full, quick: quick if QUICK else full)
GIT = shutil.which("git")
work = tempfile.mkdtemp(prefix="bench-sync-")
ENV = dict(os.environ, GIT_CONFIG_GLOBAL=os.path.join(work, "gitconfig"), GIT_CONFIG_SYSTEM="/dev/null",
           GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@e", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@e")
ENV.pop("GIT_TALLY_TRACE", None)
open(ENV["GIT_CONFIG_GLOBAL"], "w").write("[commit]\n\tgpgsign = false\n[init]\n\tdefaultBranch = main\n")

def run(*cmd, cwd=None, input=None, check=True, env=None):
    r = subprocess.run(cmd, cwd=cwd, env=env or ENV, input=input, capture_output=True)
    if check and r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr.decode()}")
    return r

def cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime

class Sample(float):
    """A wall time (s) that also carries the CPU time (s) of the processes it waited for:
    on a loaded machine the CPU time moves less than the wall time."""
    def __new__(cls, wall, cpu_s):
        s = float.__new__(cls, wall); s.cpu = cpu_s; return s

def clock(fn):
    c, t = cpu(), time.perf_counter(); fn()
    return Sample(time.perf_counter() - t, cpu() - c)

def med(samples):
    """(median wall, median CPU) of samples."""
    return statistics.median(samples), statistics.median(s.cpu for s in samples)

def fmt(m):
    return f"{m[0]*1000:.1f} ms (CPU {m[1]*1000:.1f})"

def ratio(a, b):
    return f"{a[0]/b[0]:.2f} ({a[1]/b[1]:.2f})"

def cluster(n, name, profile="tally"):
    root = os.path.join(work, name)
    os.makedirs(root)
    remote = os.path.join(root, "remote.git")
    run("git", "init", "-q", "--bare", "-b", "main", remote)
    clones = []
    for i in range(n):
        d = os.path.join(root, f"m{i}")
        run("git", "clone", "-q", "file://" + remote, d)
        for k, v in (("tally.device", f"m{i}"), ("tally.profile", profile), ("tally.pushRetries", "30")):
            run("git", "config", k, v, cwd=d)
        clones.append(d)
    return remote, clones

counter = [0]
def event():
    counter[0] += 1
    return json.dumps({"model": "gpt-5", "provider": "openai", "input_tokens": 100 + counter[0] % 50, "output_tokens": 20})

def requests_in_view(d):
    return json.load(open(os.path.join(d, "usage", "usage.json")))["totals"]["requests"]

def git_commit_note(d, name, i):
    with open(os.path.join(d, name), "a") as fh:
        fh.write(f"{i}\n")
    run("git", "add", name, cwd=d); run("git", "commit", "-qm", "n", cwd=d)

def pull_push(d):
    run("git", "pull", "-q", "--rebase", cwd=d); run("git", "push", "-q", cwd=d)

rows = []
load_start = os.getloadavg()
def row(*r):
    rows.append(r)
    print(f"  {r[0]}: {r[1]}  [{r[2]}]  {r[3]}  {r[4]}", file=sys.stderr, flush=True)

# (a) record per invocation vs the naive write path (git pull + rewrite per write), interleaved.
remote, (a, b) = cluster(2, "a")
run(BIN, "record", "--event", event(), cwd=a); run(BIN, "sync", cwd=a); run(BIN, "sync", cwd=b)
usage = os.path.join(b, "usage", "usage.json")
def naive():
    run("git", "pull", "-q", "--no-rebase", cwd=b)
    with open(usage, "w") as f:
        f.write(json.dumps({"requests": counter[0]}))
rec_t, naive_t = [], []
for _ in range(N(200, 20)):
    rec_t.append(clock(lambda: run(BIN, "record", "--event", event(), cwd=a)))
    naive_t.append(clock(naive))
rec, nv = med(rec_t), med(naive_t)
row(f"(a) record, per invocation ({len(rec_t)} runs)", fmt(rec), f"naive pull+rewrite {fmt(nv)}", ratio(rec, nv), "<= 0.20")

# (b) batch throughput from stdin.
n = 100_000
lines = "\n".join(event() for _ in range(n)).encode() + b"\n"
_, (c,) = cluster(1, "b")
dt = clock(lambda: run(BIN, "record", cwd=c, input=lines))
row("(b) record, 100k events in one batch", f"{n/dt:,.0f} events/s", f"{dt:.2f} s for {n}", "", ">= 50,000/s")

# (c) record with 100k events in the ledger (recorded, folded and pushed) vs with 1k.
def history(k, start):
    t0 = time.time() - 100 * 86400
    out = []
    for i in range(k):
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + i * (100 * 86400 / k)))
        out.append(json.dumps({"id": f"h-{start + i}", "timestamp": ts, "model": "gpt-5", "provider": "openai",
                               "api": "openai-compat", "source": "acct@example.com", "input_tokens": 100 + i % 50,
                               "output_tokens": 20 + i % 7}))
    return ("\n".join(out) + "\n").encode()
big = {}
for size in (1000, 100_000):
    _, (d,) = cluster(1, f"c{size}", profile="cliproxyapi")
    run(BIN, "record", cwd=d, input=history(size, 0)); run(BIN, "sync", cwd=d)
    big[size] = d
costs = {1000: [], 100_000: []}
for _ in range(N(100, 10)):
    for size, d in big.items():
        costs[size].append(clock(lambda: run(BIN, "record", "--event", event(), cwd=d)))
c1, c100 = med(costs[1000]), med(costs[100_000])
row("(c) record with 100k events in the ledger (CLIProxyAPI)", fmt(c100), f"with 1k: {fmt(c1)}", ratio(c100, c1), "<= 1.5")

# (d) git processes per sync, counted by a logging `git` first on PATH (the ones git-tally
# starts itself; git's own helpers find git-core first), and every process exec'd in the
# sync's tree (strace -f, when strace is installed), against the baseline's.
shim = os.path.join(work, "shim")
os.makedirs(shim)
with open(os.path.join(shim, "git"), "w") as f:
    f.write(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "$GIT_SHIM_LOG"\nexec {GIT} "$@"\n')
os.chmod(os.path.join(shim, "git"), 0o755)
STRACE = shutil.which("strace")

def count(cmds, cwd):
    """(git processes started through PATH, processes exec'd in all, the git subcommands).
    A process counts once however often it exec'd (the shim execs git); git-tally itself
    is not counted."""
    log = os.path.join(work, "shim.log")
    open(log, "w").close()
    env = dict(ENV, PATH=shim + os.pathsep + ENV["PATH"], GIT_SHIM_LOG=log)
    execs = 0
    for cmd in cmds:
        if STRACE:
            trace = os.path.join(work, "strace.log")
            run(STRACE, "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o", trace, *cmd, cwd=cwd, env=env)
            pids = {l.split()[0] for l in open(trace) if "execve" in l and l.rstrip().endswith("= 0")}
            execs += len(pids) - (cmd[0] == BIN)
        else:
            run(*cmd, cwd=cwd, env=env)
    subs = []
    for l in open(log).read().splitlines():
        words = l.split()
        while words and words[0] in ("-C", "-c"):
            words = words[2:]
        subs.append(words[0] if words else "?")
    return len(subs), execs, subs

_, (p, q) = cluster(2, "p")
_, (gp, gq) = cluster(2, "gp")
run(BIN, "record", "--event", event(), cwd=p); run(BIN, "sync", cwd=p); run(BIN, "sync", cwd=q)
git_commit_note(gp, "p.txt", 0); run("git", "push", "-q", "-u", "origin", "main", cwd=gp); run("git", "pull", "-q", cwd=gq)
sync = [BIN, "sync"]
procs = {}
procs["nothing to do"] = (count([sync], p), None)
run(BIN, "record", "--event", event(), cwd=p)
git_commit_note(gp, "p.txt", 1)
procs["a local change, nothing came in"] = (count([sync], p), count([["git", "pull", "-q", "--rebase"], ["git", "push", "-q"]], gp))
run(BIN, "record", "--event", event(), cwd=q); run(BIN, "sync", cwd=q)
run(BIN, "record", "--event", event(), cwd=p)
git_commit_note(gq, "q.txt", 1); pull_push(gq)
git_commit_note(gp, "p.txt", 2)
procs["integrating (the other pushed first)"] = (count([sync], p), count([["git", "pull", "-q", "--rebase"], ["git", "push", "-q"]], gp))
for what, (t, g) in procs.items():
    names = " ".join(t[2])
    base = f"pull --rebase && push: {g[0]} git, {g[1]} in all" if g else ""
    goal = "<= 4 git, no merge-tree" if what.startswith("integrating") else ""
    if "merge-tree" in names:
        goal += " (merge-tree started!)"
    row(f"(d) processes per sync, {what}", f"{t[0]} git ({names}), {t[1]} in all" if STRACE else f"{t[0]} git ({names})",
        base, "", goal)

# (e) one sync of a small change vs `git pull --rebase && git push` of a small commit, when
# nothing came in and when the other machine pushed first. Tally and git alternate.
_, (e1,) = cluster(1, "e1")
_, (g1,) = cluster(1, "g1")
run(BIN, "record", "--event", event(), cwd=e1); run(BIN, "sync", cwd=e1)
git_commit_note(g1, "notes.txt", 0); run("git", "push", "-q", "-u", "origin", "main", cwd=g1)
_, (e2, e3) = cluster(2, "e2")
_, (g2, g3) = cluster(2, "g2")
run(BIN, "record", "--event", event(), cwd=e2); run(BIN, "sync", cwd=e2); run(BIN, "sync", cwd=e3)
git_commit_note(g2, "notes.txt", 0); run("git", "push", "-q", "-u", "origin", "main", cwd=g2); run("git", "pull", "-q", cwd=g3)
t_quiet, g_quiet, t_in, g_in = [], [], [], []
for i in range(N(30, 5)):
    run(BIN, "record", "--event", event(), cwd=e1)
    t_quiet.append(clock(lambda: run(BIN, "sync", cwd=e1)))
    git_commit_note(g1, "notes.txt", i)
    g_quiet.append(clock(lambda: pull_push(g1)))
    # The other machine pushes first (untimed), then this one syncs.
    run(BIN, "record", "--event", event(), cwd=e3); run(BIN, "sync", cwd=e3)
    run(BIN, "record", "--event", event(), cwd=e2)
    t_in.append(clock(lambda: run(BIN, "sync", cwd=e2)))
    git_commit_note(g3, "other.txt", i); pull_push(g3)
    git_commit_note(g2, "notes.txt", i)
    g_in.append(clock(lambda: pull_push(g2)))
for what, t, g, goal in (("nothing came in", t_quiet, g_quiet, "<= 1.0"), ("the other pushed first", t_in, g_in, "<= 0.5")):
    s_, b_ = med(t), med(g)
    row(f"(e) sync of a small change, {what} ({len(t)} runs)", fmt(s_), f"git pull --rebase && push {fmt(b_)}",
        ratio(s_, b_), goal)
# Where one such sync's wall time goes: a timing `git` first on PATH logs when each git
# process starts and ends (bash's $EPOCHREALTIME, no extra process).
timing = os.path.join(work, "timing")
os.makedirs(timing)
with open(os.path.join(timing, "git"), "w") as f:
    f.write(f'#!/bin/bash\nt0=$EPOCHREALTIME\n{GIT} "$@"\nrc=$?\necho "$t0 $EPOCHREALTIME $*" >> "$GIT_SHIM_LOG"\nexit $rc\n')
os.chmod(os.path.join(timing, "git"), 0o755)

def phases(d):
    log = os.path.join(work, "phases.log")
    open(log, "w").close()
    env = dict(ENV, PATH=timing + os.pathsep + ENV["PATH"], GIT_SHIM_LOG=log)
    t0 = time.time(); run(BIN, "sync", cwd=d, env=env); t1 = time.time()
    spans = []
    for line in open(log):
        a_, b_, *cmd = line.split()
        while cmd and cmd[0] in ("-C", "-c"):
            cmd = cmd[2:]
        spans.append((float(a_), float(b_), cmd[0]))
    out, at = [], t0
    for a_, b_, name in sorted(spans):
        out += [(f"before {name}", a_ - at), (name, b_ - a_)]; at = b_
    out.append(("after", t1 - at))
    return out

def phase_medians(runs):
    """Per-phase medians (ms) of several `phases` runs, as text."""
    names = [n for n, _ in runs[0]]
    if any([n for n, _ in r] != names for r in runs):
        return " || ".join(" | ".join(f"{n} {v*1000:.0f}" for n, v in r) for r in runs)
    return " | ".join(f"{n} {statistics.median(r[i][1] for r in runs)*1000:.0f}" for i, n in enumerate(names))

breakdown = []
for what, d, other in (("nothing came in", e1, None), ("the other pushed first", e2, e3)):
    runs_ = []
    for _ in range(N(7, 2)):
        if other:
            run(BIN, "record", "--event", event(), cwd=other); run(BIN, "sync", cwd=other)
        run(BIN, "record", "--event", event(), cwd=d)
        runs_.append(phases(d))
    breakdown.append(f"{what}: {phase_medians(runs_)}")
run(BIN, "sync", cwd=e3)
if requests_in_view(e3) != requests_in_view(e2):
    sys.exit("(e): the two clones disagree")

# (f) record while a sync waits on a remote that hangs (upload-pack sleeps 30 s) vs without.
_, (h,) = cluster(1, "f")
run(BIN, "record", "--event", event(), cwd=h); run(BIN, "sync", cwd=h)
k = N(30, 5)
before = [clock(lambda: run(BIN, "record", "--event", event(), cwd=h)) for _ in range(k)]
run("git", "config", "remote.origin.uploadpack", "sleep 30; git-upload-pack", cwd=h)

def descendants(pid):
    kids = {}
    for p_ in os.listdir("/proc"):
        if p_.isdigit():
            try:
                stat = open(f"/proc/{p_}/stat").read()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(p_))
    out, todo = [], [pid]
    while todo:
        for c_ in kids.get(todo.pop(), []):
            out.append(c_); todo.append(c_)
    return out

hang = subprocess.Popen([BIN, "sync"], cwd=h, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        start_new_session=True)
deadline = time.time() + 20
def sleeping():
    for c_ in descendants(hang.pid):
        try:
            if open(f"/proc/{c_}/comm").read().strip() == "sleep":
                return True
        except OSError:
            pass
    return False
while not sleeping():
    if time.time() > deadline or hang.poll() is not None:
        sys.exit("(f): the sync did not reach the hanging fetch")
    time.sleep(0.01)
during, codes = [], []
for _ in range(k):
    during.append(clock(lambda: codes.append(run(BIN, "record", "--event", event(), cwd=h, check=False).returncode)))
still = hang.poll() is None
os.killpg(hang.pid, signal.SIGTERM); hang.wait()
after = [clock(lambda: run(BIN, "record", "--event", event(), cwd=h)) for _ in range(k)]
run("git", "config", "--unset", "remote.origin.uploadpack", cwd=h)
run(BIN, "sync", cwd=h)
recorded = 1 + 3 * k
if not still or any(codes) or requests_in_view(h) != recorded:
    sys.exit(f"(f): sync still waiting {still}, exit codes {set(codes)}, {requests_in_view(h)} of {recorded} requests")
base, dur = med(before + after), med(during)
row(f"(f) record while a sync waits on a hanging remote ({k} runs)", fmt(dur), f"without: {fmt(base)}", ratio(dur, base),
    f"same (max {max(during)*1000:.0f} ms, all exit 0)")

# (g) 16 clones syncing one remote concurrently.
remote, clones = cluster(16, "g")
for d in clones:
    run(BIN, "record", cwd=d, input=("\n".join(event() for _ in range(10)) + "\n").encode())
rounds, retries = 0, 0
while True:
    rounds += 1
    procs_ = [subprocess.Popen([BIN, "sync"], cwd=d, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for d in clones]
    for p_ in procs_:
        out, _ = p_.communicate()
        out = out.decode()
        if "pushed after" in out:
            retries += int(out.split("pushed after ")[1].split()[0])
    files = {open(os.path.join(d, "usage", "usage.json"), "rb").read() for d in clones}
    if len(files) == 1 and json.loads(files.pop())["totals"]["requests"] == 160:
        break
    if rounds > 10:
        sys.exit("no convergence in 10 rounds")
row("(g) 16 clones sync concurrently", f"{rounds} rounds", f"{retries} push retries in all", "", "converges")

w = max(len(r[0]) for r in rows)
print("(medians; wall time, and in parentheses the CPU time of the processes waited for)")
print(f"{'measure':<{w}}  {'value':>26}  {'baseline (same run)':<48} {'ratio':>12}  target")
for r in rows:
    print(f"{r[0]:<{w}}  {r[1]:>26}  {r[2]:<48} {r[3]:>12}  {r[4]}")
print("(e) where one sync's wall time goes (medians of 7, ms; before fetch: start-up, lock, fold, commit; between fetch and push:"
      " integrate, write the views):")
for b_ in breakdown:
    print(f"  {b_}")
print(f"load average (1, 5, 15 min) at the start: {' '.join(f'{x:.1f}' for x in load_start)}; at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
shutil.rmtree(work)
