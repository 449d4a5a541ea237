// npm "install" hook of a clone of the repository: builds the native addon from source with cargo (Rust,
// no CUDA toolkit: cudarc loads the driver at run time). The published package has no install hook: it
// takes its binary from the platform package (npm/<platform>/) that npm installs as an optional dependency.
// CUDAGRAPH_SKIP_BUILD=1 skips the build (a machine that gets a built binary carried to it).
'use strict'
const { spawnSync } = require('node:child_process')
const { join } = require('node:path')

if (process.env.CUDAGRAPH_SKIP_BUILD) process.exit(0)
const root = join(__dirname, '..')
if (spawnSync('cargo', ['--version'], { stdio: 'ignore' }).status !== 0) {
  console.error(
    'cudagraph: building the native addon from source needs Rust (cargo), and none is on PATH: install it from https://rustup.rs, or set CUDAGRAPH_SKIP_BUILD=1 to skip the build',
  )
  process.exit(1)
}
// package.json's build:native holds the napi build command; npm_execpath is the npm running this hook.
const r = spawnSync(process.execPath, [process.env.npm_execpath, 'run', 'build:native'], { cwd: root, stdio: 'inherit' })
process.exit(r.status ?? 1)
