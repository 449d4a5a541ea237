# The transformers peer: transformers' own model class (AutoModelForCausalLM) on a Hugging Face model
# directory, the same directory cudagraph loads (a checkpoint, or a preset written by model.save).
# Usage: python3 hf_decoder.py MODEL_DIR REQUEST.json   -> one JSON line on stdout
# REQUEST: {"batchSizes": [...], "context": C, "reps": N, "sequence": [...], "promptLengths": [...]}
#  - greedy/margins: the sequence as one teacher-forced forward; the greedy token after every prefix and
#    its top-2 margin, compared with ours by the caller.
#  - decode: per batch size B, B requests with C tokens of context, one decode step timed as ours is
#    (host clock around input copy, the step, the next tokens on the host): eager with the dynamic cache,
#    eager with the static cache, and the static cache captured in a torch.cuda graph; with "compile" in
#    the request, also the static-cache step through torch.compile (inductor's kernels), captured likewise.
#  - ttft: per prompt length, an eager prefill and its first token on the host.
import json
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, DynamicCache, StaticCache

DIR, REQ_PATH = sys.argv[1], sys.argv[2]
req = json.load(open(REQ_PATH))
dev = torch.device("cuda")
model = AutoModelForCausalLM.from_pretrained(DIR, device_map="cuda").eval()
V = model.config.vocab_size


def pct(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, round(p * (len(s) - 1)))]


out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "transformers": transformers.__version__, "dtype": str(model.dtype)}
g = torch.Generator(device="cpu").manual_seed(5)

with torch.no_grad():
    seq = req.get("sequence")
    if seq:
        logits = model(torch.tensor([seq], device=dev)).logits[0].float()
        top2 = logits.topk(2, -1).values
        out["greedy"] = logits.argmax(-1).tolist()
        out["margins"] = (top2[:, 0] - top2[:, 1]).tolist()

    reps = req["reps"]
    C = req["context"]
    rows = []
    for B in req["batchSizes"]:
        prompt = torch.randint(0, V, (B, C), generator=g).to(dev)
        host = torch.randint(0, V, (B, 1), generator=g).pin_memory()
        tokens = torch.zeros(B, 1, dtype=torch.long, device=dev)
        next_host = torch.zeros(B, dtype=torch.long).pin_memory()

        def timed(step, n):
            ts = []
            for i in range(n + 10):
                t0 = time.perf_counter()
                tokens.copy_(host, non_blocking=True)
                next_host.copy_(step())  # synchronizes: the tokens are on the host
                if i >= 10:
                    ts.append((time.perf_counter() - t0) * 1e6)
            return pct(ts, 0.5), pct(ts, 0.99)

        row = {"batch": B}
        # Eager, dynamic cache (what generate() uses by default): the cache grows by one token a step.
        cache = DynamicCache()
        model(prompt, past_key_values=cache, use_cache=True)
        row["eagerP50"], row["eagerP99"] = timed(lambda: model(tokens, past_key_values=cache, use_cache=True).logits[:, -1].argmax(-1), reps)
        del cache

        def static_cache():
            """A static cache holding the prompt, and the position of the next token (a tensor: graphs read it)."""
            cache = StaticCache(config=model.config, max_cache_len=C + 2 * reps + 64)
            model(prompt, past_key_values=cache, use_cache=True, cache_position=torch.arange(C, device=dev))
            return cache, torch.tensor([C], device=dev)

        def step_of(forward, cache, pos):
            def step():
                r = forward(tokens, past_key_values=cache, use_cache=True, cache_position=pos).logits[:, -1].argmax(-1)
                pos.add_(1)
                return r

            return step

        def graphed(step):
            """`step` warmed up on a side stream (3 calls, the first compiles where it does), captured in a CUDA
            graph and its replay timed: p50, p99 and the warm-up's seconds."""
            t0 = time.perf_counter()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    step()
            torch.cuda.current_stream().wait_stream(s)
            warm = time.perf_counter() - t0
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                last = step()

            def replay():
                graph.replay()
                return last

            return (*timed(replay, reps // 2 - 10), warm)

        def why(e):
            return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"

        # Static cache: fixed shapes and addresses, eager and then in a CUDA graph.
        try:
            static_step = step_of(model, *static_cache())
            row["staticP50"], row["staticP99"] = timed(static_step, reps // 2)
            row["graphP50"], row["graphP99"], _ = graphed(static_step)
        except Exception as e:  # report why, keep the eager figures
            row["staticError"] = why(e)
        # torch.compile (inductor's kernels) of the static-cache step, in a CUDA graph, where it works.
        if req.get("compile"):
            try:
                compiled = step_of(torch.compile(model.forward, fullgraph=True), *static_cache())
                row["compiledP50"], row["compiledP99"], row["compileSeconds"] = graphed(compiled)
            except Exception as e:
                row["compileError"] = why(e)
        rows.append(row)
        torch.cuda.empty_cache()
    out["decode"] = rows

    ttft = []
    for L in req.get("promptLengths", []):
        ids = torch.randint(0, V, (1, L), generator=g).to(dev)
        ts = []
        for i in range(8):
            t0 = time.perf_counter()
            model(ids, past_key_values=DynamicCache(), use_cache=True).logits[:, -1].argmax(-1).item()
            if i >= 3:
                ts.append((time.perf_counter() - t0) * 1e3)
        ttft.append({"promptTokens": L, "eagerMs": pct(ts, 0.5)})
    out["ttft"] = ttft
print(json.dumps(out))
