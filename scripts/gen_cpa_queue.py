#!/usr/bin/env python3
"""Realistic CLIProxyAPI usage-queue records (v6.10+), shaped as the proxy emits them
(internal/redisqueue/plugin.go): one JSON object per line, with a plain api_key, client_ip,
user_agent and, for failed requests, a failure body -- as the proxy really sends them.

gen_cpa_queue.py gen N --seed S [--prefix P]   N records on stdout, request_id = P + number
gen_cpa_queue.py sum FILE                       requests, failed, input and output token totals
gen_cpa_queue.py resp FILE [KEY]                the records of FILE as RESP `RPUSH KEY record`
                                                commands (KEY: usage), for `redis-cli --pipe`

(A copy of the project's shared generator, with `resp` added for scripts/bench-collect.sh.)
"""
import json, random, sys, datetime

def gen(n, seed, prefix):
    rng = random.Random(seed)
    t = datetime.datetime(2026, 11, 20, 8, 0, 0, tzinfo=datetime.timezone.utc)
    for i in range(n):
        t += datetime.timedelta(milliseconds=rng.randint(50, 90000))
        inp, out = rng.randint(10, 40000), rng.randint(1, 6000)
        reas, cached = rng.randint(0, 1500), rng.randint(0, inp)
        failed = rng.random() < 0.04
        rec = {
            "timestamp": t.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "latency_ms": rng.randint(200, 90000), "ttft_ms": rng.randint(50, 3000),
            "source": f"acct{rng.randint(1, 4)}@example.com", "auth_index": str(rng.randint(0, 7)),
            "client_ip": f"203.0.113.{rng.randint(1, 254)}", "x_forwarded_for": "", "user_agent": "claude-cli/2.1.39",
            "tokens": {"input_tokens": inp, "output_tokens": out, "reasoning_tokens": reas, "cached_tokens": cached,
                       "cache_read_tokens": cached, "cache_read_tokens_present": True, "cache_creation_tokens": 0,
                       "cache_creation_5m_tokens": 0, "cache_creation_1h_tokens": 0, "total_tokens": inp + out + reas},
            "failed": failed, "generate": False, "stream": True,
            "fail": {"status_code": 429, "body": "rate limited for sk-live-SECRET"} if failed else {"status_code": 200, "body": ""},
            "accounting_version": 2, "token_breakdown": {},
            "provider": rng.choice(["claude", "codex", "gemini"]), "executor_type": "oauth",
            "model": rng.choice(["claude-sonnet-4-5", "gpt-5-codex", "gemini-2.5-pro"]), "alias": "",
            "endpoint": "/v1/messages", "auth_type": "oauth", "api_key": "sk-live-SECRET-" + str(rng.randint(1, 3)),
            "request_id": f"{prefix}{i:07d}", "reasoning_effort": "", "service_tier": "",
        }
        rec["alias"] = rec["model"]
        print(json.dumps(rec, separators=(",", ":")))

def total(path):
    r = f = i = o = 0
    for line in open(path):
        d = json.loads(line); r += 1; f += d["failed"]; i += d["tokens"]["input_tokens"]; o += d["tokens"]["output_tokens"]
    print(f"requests={r} failed={f} input={i} output={o}")

def resp(path, key):
    out = sys.stdout.buffer
    k = key.encode()
    for line in open(path, "rb"):
        rec = line.rstrip(b"\n")
        if not rec:
            continue
        out.write(b"*3\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(rec), rec))

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "gen":
        seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 1
        prefix = sys.argv[sys.argv.index("--prefix") + 1] if "--prefix" in sys.argv else "req-"
        gen(int(sys.argv[2]), seed, prefix)
    elif cmd == "sum":
        total(sys.argv[2])
    elif cmd == "resp":
        resp(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "usage")
