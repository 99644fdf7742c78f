#!/usr/bin/env python3
import json, re, sys
# Trims LiteLLM's model price data to the bundled table (src/prices/litellm-prices.json):
# python3 scripts/litellm-snapshot.py model_prices_and_context_window_backup.json OUT.json
# then put the "_git_tally" line (source, snapshot date) first; see src/prices/README.md.
src, dst = sys.argv[1], sys.argv[2]
d = json.load(open(src))
PROVIDERS = {"anthropic", "openai", "text-completion-openai", "gemini", "vertex_ai-language-models", "vertex_ai-anthropic_models", "deepseek", "xai", "mistral", "codestral", "bedrock", "bedrock_converse", "moonshot", "zai"}
MODES = {"chat", "responses", "completion", None}
FIELD = re.compile(r"^(input_cost_per_token|output_cost_per_token|output_cost_per_reasoning_token|cache_creation_input_token_cost|cache_read_input_token_cost)(_above_\d+k_tokens)?$|^cache_creation_input_token_cost_above_1hr(_above_\d+k_tokens)?$")
out = {}
for k, v in d.items():
    if k == "sample_spec" or not isinstance(v, dict): continue
    if v.get("litellm_provider") not in PROVIDERS or v.get("mode") not in MODES: continue
    if v.get("litellm_provider") in ("bedrock", "bedrock_converse") and "claude" not in k: continue
    e = {f: x for f, x in v.items() if FIELD.match(f) and isinstance(x, (int, float))}
    if "input_cost_per_token" not in e and "output_cost_per_token" not in e: continue
    e["litellm_provider"] = v["litellm_provider"]
    out[k] = e
lines = ["{"] + [f"{json.dumps(k)}: {json.dumps(e, separators=(',', ':'))}," for k, e in sorted(out.items())]
lines[-1] = lines[-1].rstrip(",")
open(dst, "w").write("\n".join(lines) + "\n}\n")
print(len(out), sum(len(l) for l in lines))
