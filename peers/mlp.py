"""PyTorch peer of bench/manager.mjs: the same MLP stack (LAYERS x relu(x W + b), f16, cuBLAS) with the same
weights, eager and replayed through torch.cuda.CUDAGraph, timed the same way: per step, the host input is
copied into the static input (pinned, non-blocking), the step runs, the stream is synchronised; median and
p99 over REPS steps after warm-up. Two graph variants: the idiomatic `addmm(b, x, w).relu_()` (cuBLASLt GEMM with a
bias epilogue, then a relu kernel) and `torch._addmm_activation(b, x, w)`, which fuses the relu into the GEMM's
cuBLASLt epilogue as cudagraph does; ours is compared with the faster of the two. Prints one JSON line.
Usage: python3 mlp.py WEIGHTS_FILE LAYERS HIDDEN REPS SIZES(comma-separated)"""
import json
import sys
import time

import numpy as np
import torch


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]


def main():
    path, layers, hidden, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    sizes = [int(s) for s in sys.argv[5].split(",")]
    raw = np.fromfile(path, dtype=np.float16)
    per = hidden * hidden + hidden
    assert raw.size == layers * per + hidden, "weights file does not match LAYERS and HIDDEN"
    ws, bs = [], []
    for i in range(layers):
        ws.append(torch.from_numpy(raw[i * per : i * per + hidden * hidden].reshape(hidden, hidden).copy()).cuda())
        bs.append(torch.from_numpy(raw[i * per + hidden * hidden : (i + 1) * per].copy()).cuda())
    probe = torch.from_numpy(raw[layers * per :].copy()).reshape(1, hidden)

    def forward(x):
        for w, b in zip(ws, bs):
            x = torch.addmm(b, x, w).relu_()
        return x

    def forward_fused(x):
        for w, b in zip(ws, bs):
            x = torch._addmm_activation(b, x, w)
        return x

    def time_graph(fwd, static_x, host):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=s):
            fwd(static_x)
        for _ in range(10):
            static_x.copy_(host, non_blocking=True)
            g.replay()
        s.synchronize()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            static_x.copy_(host, non_blocking=True)
            g.replay()
            s.synchronize()
            times.append((time.perf_counter_ns() - t0) / 1e3)
        del g
        return times

    s = torch.cuda.Stream()
    out = {"torch": torch.__version__, "rows": []}
    with torch.cuda.stream(s):
        out["probe"] = forward(probe.cuda()).float().cpu().numpy().ravel().tolist()
        out["fusedProbe"] = forward_fused(probe.cuda()).float().cpu().numpy().ravel().tolist()
        gen = torch.Generator().manual_seed(1)
        for n in sizes:
            host = (torch.rand(n, hidden, generator=gen) * 2 - 1).half().pin_memory()
            static_x = torch.empty(n, hidden, dtype=torch.float16, device="cuda")

            def step_eager():
                static_x.copy_(host, non_blocking=True)
                return forward(static_x)

            for _ in range(10):
                step_eager()
            s.synchronize()
            eager = []
            for _ in range(reps):
                t0 = time.perf_counter_ns()
                step_eager()
                s.synchronize()
                eager.append((time.perf_counter_ns() - t0) / 1e3)
            graph = time_graph(forward, static_x, host)
            fused = time_graph(forward_fused, static_x, host)
            out["rows"].append({
                "n": n, "eagerUs": pct(eager, 0.5), "eagerP99Us": pct(eager, 0.99),
                "graphUs": pct(graph, 0.5), "graphP99Us": pct(graph, 0.99),
                "fusedGraphUs": pct(fused, 0.5), "fusedGraphP99Us": pct(fused, 0.99),
            })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
