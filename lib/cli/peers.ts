/**
 * The benchmark peers: package data in peers/ (raw CUDA C, PyTorch scripts and our own side of the launch
 * chain), found here and nowhere else.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { PACKAGE_ROOT } from '../util/package-root.js'
import { BenchmarkError } from './errors.js'

/** The peers folder of the installed package. */
export const PEERS_DIR = join(PACKAGE_ROOT, 'peers')

/** Path of peer file `name`. */
export function peerPath(name: string): string {
  return join(PEERS_DIR, name)
}

/** A peer's JSON result, or why it was skipped. */
export type PeerResult = Record<string, number> & { skipped?: string }

/**
 * Builds raw CUDA C peer `name` (peers/<name>.cu) with nvcc once, into /tmp keyed by the sources' hash (a
 * warm machine keeps /tmp, and a stale build must not be timed), with extra nvcc flags `extra`, then runs
 * it with `args`: one JSON line back. No compiler: a `{ skipped }` result with the reason.
 */
export function cPeer(name: string, extra: readonly string[], args: readonly (string | number)[]): PeerResult {
  const hash = createHash('sha256')
  for (const f of [`${name}.cu`, 'chain_timing.h']) hash.update(readFileSync(peerPath(f)))
  const bin = `/tmp/cudagraph_${name}_${hash.digest('hex').slice(0, 12)}`
  if (!existsSync(bin)) {
    const cc = spawnSync('nvcc', ['-O2', '-arch=native', '-o', bin, peerPath(`${name}.cu`), ...extra], { encoding: 'utf8' })
    if (cc.status !== 0) {
      process.stderr.write(cc.stderr ?? '')
      const line = cc.stderr?.split('\n').find((l) => l.includes('error'))
      return { skipped: `nvcc: ${cc.error?.message ?? line ?? 'failed'}` } as PeerResult
    }
  }
  return JSON.parse(execFileSync(bin, args.map(String), { encoding: 'utf8' }).trim()) as PeerResult
}

/** Our side of the launch chain of `n` kernels in a fresh Node process (peers/launch_chain.mjs), like the C peer. */
export function oursChain(n: number, reps: number): Record<string, number> {
  const r = spawnSync(process.execPath, [peerPath('launch_chain.mjs'), String(n), String(reps)], { encoding: 'utf8' })
  if (r.status !== 0) throw new BenchmarkError(`peers/launch_chain.mjs failed: ${r.stderr}`)
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Record<string, number>
}
