# The PyTorch peer of the built-in decoder (lib/decoder-model.ts): the same math on the same weights
# (a safetensors file the CLI writes), eager and with torch.cuda graphs, in the same run.
# Usage: python3 decoder.py WEIGHTS.safetensors REQUEST.json   -> one JSON line on stdout
# REQUEST: {"batchSizes": [...], "context": C, "reps": N, "sequence": [...], "promptLen": P}
#  - decode: per batch size B, B requests at context C (positions C-1), one decode step timed as ours is:
#    host clock around input copy from pinned memory, the step, the next tokens back to the host.
#  - check: the sequence (prompt + our generated tokens) as one teacher-forced prefill; the greedy token at
#    every generated position, compared with ours by the caller.
import json
import struct
import sys
import time

import torch
import torch.nn.functional as F

W_PATH, REQ_PATH = sys.argv[1], sys.argv[2]
req = json.load(open(REQ_PATH))
dev = torch.device("cuda")


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__")
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        assert h["dtype"] == "F16", name
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float16).reshape(h["shape"]).to(dev)
    return json.loads(meta["config"]), out


cfg, W = load(W_PATH)
L, H, NH, NKV, FFN, V = cfg["layers"], cfg["hidden"], cfg["heads"], cfg["kvHeads"], cfg["ffn"], cfg["vocab"]
HD = H // NH
EPS, THETA = cfg["eps"], cfg["ropeTheta"]
inv_freq = THETA ** (-2.0 * torch.arange(HD // 2, device=dev, dtype=torch.float32) / HD)


def norm(resid, w):
    return (resid * torch.rsqrt(resid.pow(2).mean(-1, keepdim=True) + EPS) * w.float()).half()


def rope(x, pos):  # x [T, heads, HD] f16; pairs (i, i + HD/2)
    ang = pos.float()[:, None, None] * inv_freq
    c, s = torch.cos(ang), torch.sin(ang)
    a, b = x[..., : HD // 2].float(), x[..., HD // 2 :].float()
    return torch.cat([a * c - b * s, b * c + a * s], -1).half()


class Model:
    def __init__(self, slots, max_seq):
        self.kc = [torch.zeros(slots, max_seq, NKV, HD, device=dev, dtype=torch.float16) for _ in range(L)]
        self.vc = [torch.zeros_like(k) for k in self.kc]

    def forward(self, tokens, pos, slots, last, ctx):
        """tokens/pos/slots [T], last [R]; attends over the first `ctx` positions of each slot, masked."""
        T = tokens.shape[0]
        resid = W["embed"][tokens].float()
        keys = torch.arange(ctx, device=dev)
        mask = (keys[None, :] <= pos[:, None])[:, None, None, :]  # [T,1,1,ctx]: which keys each row sees
        delta = None
        for l in range(L):
            if delta is not None:
                resid = resid + delta.float()
            x = norm(resid, W[f"layers.{l}.attn_norm"])
            qkv = x @ W[f"layers.{l}.qkv"]
            q = rope(qkv[:, : NH * HD].view(T, NH, HD), pos)
            k = rope(qkv[:, NH * HD : (NH + NKV) * HD].view(T, NKV, HD), pos)
            v = qkv[:, (NH + NKV) * HD :].view(T, NKV, HD)
            self.kc[l][slots, pos] = k
            self.vc[l][slots, pos] = v
            K = self.kc[l][slots, :ctx].transpose(1, 2)  # [T, NKV, ctx, HD]
            Vv = self.vc[l][slots, :ctx].transpose(1, 2)
            attn = F.scaled_dot_product_attention(q[:, :, None], K, Vv, attn_mask=mask, enable_gqa=NKV != NH)
            attn = attn.reshape(T, NH * HD)
            delta = attn @ W[f"layers.{l}.o"]
            resid = resid + delta.float()
            x = norm(resid, W[f"layers.{l}.mlp_norm"])
            gu = (x @ W[f"layers.{l}.gate_up"]).float()
            act = (F.silu(gu[:, :FFN]) * gu[:, FFN:]).half()
            delta = act @ W[f"layers.{l}.down"]
        x = norm((resid + delta.float())[last], W["norm"])
        logits = (x @ W["lm_head"]).float()
        return logits, logits.argmax(-1)


def pct(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, round(p * (len(s) - 1)))]


out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
B_MAX = max(req["batchSizes"])
C = req["context"]
seq = req["sequence"]
m = Model(max(B_MAX, 1) + 1, max(C, len(seq)) + 1)

# Correctness: the teacher-forced greedy token after every prefix.
with torch.no_grad():
    n = len(seq)
    t = torch.tensor(seq, device=dev, dtype=torch.long)
    pos = torch.arange(n, device=dev)
    logits, nxt = m.forward(t, pos, torch.zeros(n, dtype=torch.long, device=dev), pos, n)
    top2 = logits.topk(2, -1).values
    out["greedy"] = nxt.tolist()
    out["margins"] = (top2[:, 0] - top2[:, 1]).tolist()

# Decode step timing per batch size: B requests at context C, eager and graph.
reps = req["reps"]
rows = []
with torch.no_grad():
    # Fill the caches with a real context (prefill of each slot's random prompt).
    g = torch.Generator(device="cpu").manual_seed(5)
    for b in range(B_MAX):
        toks = torch.randint(0, V, (C,), generator=g).to(dev)
        p = torch.arange(C, device=dev)
        m.forward(toks, p, torch.full((C,), b, device=dev, dtype=torch.long), p[-1:], C)
    torch.cuda.synchronize()
    for B in req["batchSizes"]:
        host = torch.randint(0, V, (B,), generator=g).pin_memory()
        tokens = torch.zeros(B, dtype=torch.long, device=dev)
        pos = torch.full((B,), C - 1, dtype=torch.long, device=dev)
        slots = torch.arange(B, device=dev)
        last = torch.arange(B, device=dev)
        next_host = torch.zeros(B, dtype=torch.long).pin_memory()

        def step():
            return m.forward(tokens, pos, slots, last, C)[1]

        def timed(run):
            for _ in range(10):
                run()
            torch.cuda.synchronize()
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                tokens.copy_(host, non_blocking=True)
                r = run()
                next_host.copy_(r)  # synchronizes: the tokens are on the host
                ts.append((time.perf_counter() - t0) * 1e6)
            return pct(ts, 0.5), pct(ts, 0.99)

        e50, e99 = timed(step)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_next = step()

        def replay():
            graph.replay()
            return static_next

        g50, g99 = timed(replay)
        rows.append({"batch": B, "eagerP50": e50, "eagerP99": e99, "graphP50": g50, "graphP99": g99})
        del graph
out["decode"] = rows
print(json.dumps(out))
