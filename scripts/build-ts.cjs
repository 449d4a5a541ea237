// Compiles lib/ to dist/ and copies the binding's generated types (lib/cuda/binding.d.ts, written by
// `napi build`), which tsc reads but does not emit, so dist/cuda/native.d.ts can refer to them.
'use strict'
const { spawnSync } = require('node:child_process')
const { copyFileSync, mkdirSync } = require('node:fs')
const { join } = require('node:path')

const root = join(__dirname, '..')
const tsc = join(require.resolve('typescript/package.json', { paths: [root] }), '..', 'bin', 'tsc')
const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' })
if (r.status !== 0) process.exit(r.status ?? 1)
mkdirSync(join(root, 'dist', 'cuda'), { recursive: true })
copyFileSync(join(root, 'lib', 'cuda', 'binding.d.ts'), join(root, 'dist', 'cuda', 'binding.d.ts'))
