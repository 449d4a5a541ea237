// npm "install" hook: use a prebuilt binary when one is present (the platform package, or a
// cudagraph.<platform>.node beside package.json), else build the addon from source with cargo.
// The build needs Rust but no CUDA toolkit: cudarc loads the driver at run time.
'use strict'
const { existsSync, readdirSync, copyFileSync } = require('node:fs')
const { join } = require('node:path')
const { spawnSync } = require('node:child_process')

const root = join(__dirname, '..')
const prebuilt = readdirSync(root).some((f) => /^cudagraph\..+\.node$/.test(f))
const platformPkg = `cudagraph-${process.platform}-${process.arch}${process.platform === 'linux' ? '-gnu' : ''}`
let fromPackage = false
try {
  require.resolve(`${platformPkg}/package.json`, { paths: [root] })
  fromPackage = true
} catch {}
if (prebuilt || fromPackage || process.env.CUDAGRAPH_SKIP_BUILD) process.exit(0)

const run = (cmd, args) => spawnSync(cmd, args, { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' })
console.log('cudagraph: no prebuilt binary for this platform; building from source with cargo')
let napiCli = null
try {
  napiCli = require.resolve('@napi-rs/cli/package.json', { paths: [root] })
} catch {}
if (napiCli) {
  const r = run(process.execPath, [join(napiCli, '..', 'dist', 'cli.js'), 'build', '--platform', '--release'])
  process.exit(r.status ?? 1)
}
if (spawnSync('cargo', ['--version']).status !== 0) {
  console.error('cudagraph: no prebuilt binary and no Rust toolchain (cargo) to build one; install Rust from rustup.rs')
  process.exit(1)
}
const r = run('cargo', ['build', '--release', '-p', 'cudagraph'])
if (r.status !== 0) process.exit(r.status ?? 1)
const ext = process.platform === 'win32' ? 'dll' : process.platform === 'darwin' ? 'dylib' : 'so'
const lib = join(root, 'target', 'release', `${process.platform === 'win32' ? '' : 'lib'}cudagraph.${ext}`)
const abi = process.platform === 'linux' ? '-gnu' : process.platform === 'win32' ? '-msvc' : ''
const dest = join(root, `cudagraph.${process.platform}-${process.arch}${abi}.node`)
if (!existsSync(lib)) {
  console.error(`cudagraph: cargo finished but ${lib} is missing`)
  process.exit(1)
}
copyFileSync(lib, dest)
