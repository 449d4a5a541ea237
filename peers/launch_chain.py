"""PyTorch peer of bench/launch.mjs: a chain of N tiny in-place kernels (x.mul_(a) would be 2 ops per step,
so each step is one x.add_(b) on 256 floats), eager and with torch.cuda.CUDAGraph, timed the same way.
Prints one JSON line. Usage: python3 launch_chain.py N REPS"""
import json
import sys
import time

import torch


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]


def main():
    n_kernels = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    s = torch.cuda.Stream()
    x = torch.rand(256, device="cuda")

    def chain():
        for _ in range(n_kernels):
            x.add_(0.001)

    with torch.cuda.stream(s):
        chain()
        s.synchronize()
        eager, eager_enq = [], []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            chain()
            t1 = time.perf_counter_ns()
            s.synchronize()
            t2 = time.perf_counter_ns()
            eager_enq.append((t1 - t0) / 1e3)
            eager.append((t2 - t0) / 1e3)
        cap = []
        g = None
        for _ in range(20):
            t0 = time.perf_counter_ns()
            g2 = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g2, stream=s):
                chain()
            cap.append((time.perf_counter_ns() - t0) / 1e3)
            g = g2
        for _ in range(20):
            g.replay()
            s.synchronize()
        timer, batched = [], []
        for _ in range(reps * 10):
            t0 = time.perf_counter_ns()
            timer.append((time.perf_counter_ns() - t0) / 1e3)
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            for _ in range(8):
                g.replay()
            batched.append((time.perf_counter_ns() - t0) / 8e3)
            s.synchronize()
        enq, replay = [], []
        for _ in range(reps * 10):
            t0 = time.perf_counter_ns()
            g.replay()
            enq.append((time.perf_counter_ns() - t0) / 1e3)
            s.synchronize()
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            g.replay()
            s.synchronize()
            replay.append((time.perf_counter_ns() - t0) / 1e3)
    print(json.dumps({
        "n": n_kernels, "eagerUs": pct(eager, 0.5), "eagerP99Us": pct(eager, 0.99), "eagerEnqueueUs": pct(eager_enq, 0.5),
        "captureInstantiateUs": pct(cap, 0.5), "timerUs": pct(timer, 0.5), "enqueueP50Us": pct(enq, 0.5), "enqueueBatchedUs": pct(batched, 0.5), "enqueueP99Us": pct(enq, 0.99),
        "replayUs": pct(replay, 0.5), "replayP99Us": pct(replay, 0.99), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
