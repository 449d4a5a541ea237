#!/usr/bin/env node
// Assembles a release, napi-rs style: one tarball per platform whose binary was built
// (npm/<platform>/ plus cudagraph.<platform>.node from the repository root) and the main package, which
// ships no binary and no Rust sources, has no install hook, and lists every platform package as an
// optional dependency at its own version, so npm installs the one that matches the machine.
//
//   node scripts/release.mjs [--out DIR]     (default: release/)
//
// Build the binaries first: `npm run build:native` (this machine's) and scripts/build-arm64.sh.
// Prints each tarball with its size, and a JSON summary on the last line.
import { execFileSync } from 'node:child_process'
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const args = process.argv.slice(2)
const outArg = args.indexOf('--out')
const out = resolve(outArg >= 0 ? args[outArg + 1] : join(root, 'release'))
mkdirSync(out, { recursive: true })

const main = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const platforms = readdirSync(join(root, 'npm')).filter((p) => existsSync(join(root, 'npm', p, 'package.json')))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

/** Packs `dir` into `out`; returns the tarball's file name. */
function pack(dir) {
  const r = JSON.parse(execFileSync(npm, ['pack', '--json', '--ignore-scripts', '--pack-destination', out], { cwd: dir, encoding: 'utf8' }))
  return r[0].filename
}

const stage = mkdtempSync(join(tmpdir(), 'cudagraph-release-'))
const made = []
const missing = []
try {
  for (const p of platforms) {
    const node = join(root, `cudagraph.${p}.node`)
    if (!existsSync(node)) {
      missing.push(p)
      continue
    }
    const dir = join(stage, p)
    mkdirSync(dir)
    const pkg = JSON.parse(readFileSync(join(root, 'npm', p, 'package.json'), 'utf8'))
    pkg.version = main.version
    writeFileSync(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`)
    for (const f of ['README.md']) copyFileSync(join(root, 'npm', p, f), join(dir, f))
    copyFileSync(join(root, 'LICENSE'), join(dir, 'LICENSE'))
    copyFileSync(node, join(dir, `cudagraph.${p}.node`))
    made.push({ platform: p, file: pack(dir) })
  }

  const dir = join(stage, 'main')
  mkdirSync(dir)
  for (const f of [...main.files, 'README.md', 'LICENSE']) cpSync(join(root, f), join(dir, f), { recursive: true })
  const pkg = { ...main }
  // A user's install builds nothing: no install or prepare hook, no dev tooling.
  const { scripts: _scripts, devDependencies: _dev, napi: _napi, ava: _ava, ...published } = pkg
  published.optionalDependencies = Object.fromEntries(platforms.map((p) => [`cudagraph-${p}`, main.version]))
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(published, null, 2)}\n`)
  made.unshift({ platform: 'main', file: pack(dir) })
} finally {
  rmSync(stage, { recursive: true, force: true })
}

for (const m of made) {
  m.bytes = statSync(join(out, m.file)).size
  console.log(`${m.file.padEnd(34)} ${(m.bytes / 1024).toFixed(0).padStart(6)} KiB  (${m.platform})`)
}
if (missing.length > 0) console.log(`not built here, so not packed: ${missing.join(', ')} (their cudagraph.<platform>.node is missing)`)
console.log(JSON.stringify({ out, tarballs: made, missing }))
