// The timing both C peers share: the same loops and statistics as peers/launch_chain.mjs, one JSON
// line out. `Ops` supplies chain() (enqueue the N kernels), sync(), capture() (capture the chain and
// instantiate it, replacing the current executable), upload() and launch() of the current executable.
// A template, so the calls being timed are direct calls, with no indirection of our own.
#pragma once
#include <stdio.h>
#include <time.h>
#include <algorithm>
#include <vector>

static inline double now_us() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static inline double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, (size_t)(p * (v.size() - 1) + 0.5))];
}

template <class Ops>
void run_chain_benchmark(int n, int reps, Ops& ops) {
  ops.chain();
  ops.sync();
  std::vector<double> eager, eagerEnq, capInst, timer, enq, batched, replay;
  for (int r = 0; r < reps; r++) {
    double t0 = now_us();
    ops.chain();
    double t1 = now_us();
    ops.sync();
    eagerEnq.push_back(t1 - t0);
    eager.push_back(now_us() - t0);
  }
  for (int r = 0; r < 20; r++) {
    double t0 = now_us();
    ops.capture();
    capInst.push_back(now_us() - t0);
  }
  ops.upload();
  ops.sync();
  for (int r = 0; r < 20; r++) {
    ops.launch();
    ops.sync();
  }
  int samples = reps * 10;
  for (int r = 0; r < samples; r++) {
    double t0 = now_us();
    timer.push_back(now_us() - t0);
  }
  for (int r = 0; r < samples; r++) {
    double t0 = now_us();
    ops.launch();
    enq.push_back(now_us() - t0);
    ops.sync();
  }
  for (int r = 0; r < reps; r++) {
    double t0 = now_us();
    for (int j = 0; j < 8; j++) ops.launch();
    batched.push_back((now_us() - t0) / 8);
    ops.sync();
  }
  for (int r = 0; r < reps; r++) {
    double t0 = now_us();
    ops.launch();
    ops.sync();
    replay.push_back(now_us() - t0);
  }
  printf("{\"n\":%d,\"eagerUs\":%.3f,\"eagerP99Us\":%.3f,\"eagerEnqueueUs\":%.3f,\"captureInstantiateUs\":%.3f,"
         "\"timerUs\":%.4f,\"enqueueP50Us\":%.4f,\"enqueueP99Us\":%.4f,\"enqueueBatchedUs\":%.4f,\"replayUs\":%.3f,"
         "\"replayP99Us\":%.3f}\n",
         n, pct(eager, 0.5), pct(eager, 0.99), pct(eagerEnq, 0.5), pct(capInst, 0.5), pct(timer, 0.5), pct(enq, 0.5),
         pct(enq, 0.99), pct(batched, 0.5), pct(replay, 0.5), pct(replay, 0.99));
}
