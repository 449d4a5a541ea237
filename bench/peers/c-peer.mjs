// Builds a raw CUDA C peer (bench/peers/<name>.cu) with nvcc once, into /tmp keyed by the sources' hash
// (a warm machine keeps /tmp, and a stale build must not be timed), then runs it: one JSON line back.
// A missing compiler is a { skipped } result with the reason. Used by bench/launch.mjs and `cudagraph bench`.
import { execFileSync, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))

/** Runs peer `name` with `args`, built with extra nvcc flags `extra`. */
export function cPeer(name, extra, args) {
  const hash = createHash('sha256')
  for (const f of [`${name}.cu`, 'chain_timing.h']) hash.update(readFileSync(join(here, f)))
  const bin = `/tmp/cudagraph_${name}_${hash.digest('hex').slice(0, 12)}`
  if (!existsSync(bin)) {
    const cc = spawnSync('nvcc', ['-O2', '-arch=native', '-o', bin, join(here, `${name}.cu`), ...extra], { encoding: 'utf8' })
    if (cc.status !== 0) {
      process.stderr.write(cc.stderr ?? '')
      return { skipped: `nvcc: ${cc.error?.message ?? cc.stderr.split('\n').find((l) => l.includes('error')) ?? 'failed'}` }
    }
  }
  return JSON.parse(execFileSync(bin, args.map(String), { encoding: 'utf8' }).trim())
}

/** Our side of the launch chain in a fresh Node process (bench/peers/launch_chain.mjs), like the C peer. */
export function oursChain(n, reps) {
  const r = spawnSync(process.execPath, [join(here, 'launch_chain.mjs'), String(n), String(reps)], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`bench/peers/launch_chain.mjs failed: ${r.stderr}`)
  return JSON.parse(r.stdout.trim().split('\n').pop())
}
