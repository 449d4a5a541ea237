/**
 * What the machine took from the calling thread's CPU over a stretch of time: the kernel's run-queue wait and
 * involuntary context switches of this thread, and the hypervisor's steal time over all CPUs. A benchmark
 * reads a sample before and after a timed stretch (never inside it) to tell a slow tail caused by the
 * machine from one caused by the work. Linux only (/proc); elsewhere `cpuSample` returns undefined.
 */
import { readFileSync } from 'node:fs'

/** CPU contention counters, or their change over a stretch. */
export interface CpuContention {
  /** Time this thread was runnable but waiting for a CPU, µs (0 where the kernel keeps no schedstats). */
  runQueueWaitUs: number
  /** Times this thread was preempted. */
  involuntarySwitches: number
  /** Time the hypervisor ran something else on this VM's CPUs, summed over CPUs, ms (10 ms ticks). */
  stealMs: number
}

/** Clock ticks per second of /proc/stat (USER_HZ, 100 on Linux). */
const USER_HZ = 100

const read = (path: string): string | undefined => {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
}

/** The counters now, or undefined where /proc is missing (not Linux). */
export function cpuSample(): CpuContention | undefined {
  const stat = read('/proc/stat')
  const status = read('/proc/thread-self/status')
  if (stat === undefined || status === undefined) return undefined
  // "cpu  user nice system idle iowait irq softirq steal ..." (the all-CPU line comes first).
  const steal = Number(stat.slice(0, stat.indexOf('\n')).trim().split(/\s+/)[8] ?? 0)
  const switches = Number(/nonvoluntary_ctxt_switches:\s*(\d+)/.exec(status)?.[1] ?? 0)
  // "time on CPU (ns) time waiting on a run queue (ns) timeslices".
  const wait = Number(read('/proc/thread-self/schedstat')?.trim().split(/\s+/)[1] ?? 0)
  return { runQueueWaitUs: wait / 1000, involuntarySwitches: switches, stealMs: (steal * 1000) / USER_HZ }
}

/** `after - before`, or undefined when either is. */
export function cpuDelta(before: CpuContention | undefined, after: CpuContention | undefined): CpuContention | undefined {
  if (before === undefined || after === undefined) return undefined
  return {
    runQueueWaitUs: after.runQueueWaitUs - before.runQueueWaitUs,
    involuntarySwitches: after.involuntarySwitches - before.involuntarySwitches,
    stealMs: after.stealMs - before.stealMs,
  }
}

/** "steal 30 ms, run-queue wait 120 µs, 3 preemptions", or "not measured". */
export function describeContention(c: CpuContention | undefined): string {
  if (c === undefined) return 'not measured'
  return `steal ${c.stealMs.toFixed(0)} ms, run-queue wait ${c.runQueueWaitUs.toFixed(0)} µs, ${c.involuntarySwitches} preemptions`
}
