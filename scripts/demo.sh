#!/usr/bin/env bash
# Two machines record usage concurrently in one repository; git merges them with the
# git-tally driver, and the result counts every request exactly once.
set -euo pipefail
command -v git-tally >/dev/null || { echo "git-tally is not on PATH: run scripts/install.sh first" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/git-tally-demo.XXXXXX")
cd "$dir"
g() { git -c user.name=demo -c user.email=demo@example.com -c commit.gpgsign=false "$@"; }
g init -q -b main repo && cd repo
git-tally install >/dev/null
mkdir -p usage
snapshot() { # events... as "id:day:model:tokens"
  python3 - "$@" <<'PY'
import json, sys
d = {"total_requests": 0, "success_count": 0, "failure_count": 0, "total_tokens": 0, "apis": {},
     "requests_by_day": {}, "requests_by_hour": {}, "tokens_by_day": {}, "tokens_by_hour": {}}
for spec in sys.argv[1:]:
    i, day, model, tok = spec.split(":"); i, day, tok = int(i), int(day), int(tok)
    total = tok + 10
    det = {"timestamp": f"2026-11-{day:02d}T10:{i:02d}:00Z", "source": "demo", "auth_index": "0",
           "tokens": {"input_tokens": tok, "output_tokens": 10, "reasoning_tokens": 0, "cached_tokens": 0, "total_tokens": total}, "failed": False}
    a = d["apis"].setdefault("demo-key", {"total_requests": 0, "total_tokens": 0, "models": {}})
    m = a["models"].setdefault(model, {"total_requests": 0, "total_tokens": 0, "details": []})
    m["details"].append(det)
    for o in (d, a, m): o["total_requests"] += 1; o["total_tokens"] += total
    d["success_count"] += 1
    for k, key, v in (("requests_by_day", f"2026-11-{day:02d}", 1), ("tokens_by_day", f"2026-11-{day:02d}", total), ("requests_by_hour", "10", 1), ("tokens_by_hour", "10", total)):
        d[k][key] = d[k].get(key, 0) + v
print(json.dumps(d, indent=2, sort_keys=False))
PY
}
snapshot 1:1:gpt-5:100 2:1:gpt-5:200 > usage/usage.json
g add -A && g commit -qm "base: 2 requests"
g checkout -qb laptop
snapshot 1:1:gpt-5:100 2:1:gpt-5:200 3:2:gpt-5:300 4:2:claude-sonnet-4-5:400 > usage/usage.json
g commit -qam "laptop: +2 requests"
g checkout -q main
snapshot 1:1:gpt-5:100 2:1:gpt-5:200 5:2:gpt-5:500 6:3:gemini-2.5-pro:600 7:3:gpt-5:700 > usage/usage.json
g commit -qam "server: +3 requests"
echo "== git merge laptop (the driver merges usage/usage.json)"
g merge -q --no-edit laptop
python3 - <<'PY'
import json
d = json.load(open("usage/usage.json"))
print(f"total_requests = {d['total_requests']} (2 base + 2 laptop + 3 server = 7)")
print(f"total_tokens   = {d['total_tokens']}")
for api in d["apis"].values():
    for name, m in api["models"].items():
        print(f"  {name:20} {m['total_requests']} requests, {len(m['details'])} details")
PY
git-tally check usage/usage.json
echo "demo repository: $dir/repo"
