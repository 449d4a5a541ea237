// The layering of lib/ (docs/architecture.md): every import between folders goes the allowed way.

import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'ava'

const lib = fileURLToPath(new URL('../lib', import.meta.url))
const ALLOWED = {
  errors: [],
  util: ['errors'],
  cuda: ['util', 'errors'],
  policy: ['util', 'errors'],
  manager: ['cuda', 'policy', 'util', 'errors'],
  model: ['manager', 'cuda', 'policy', 'util', 'errors'],
  serve: ['manager', 'policy', 'util', 'errors'],
  cli: ['serve', 'model', 'manager', 'cuda', 'policy', 'util', 'errors'],
  index: ['cuda', 'policy', 'manager', 'errors'],
}

function files(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  )
}

/** The room of a file: its folder under lib/, or its own name at the top. */
const room = (file) => {
  const [first, second] = relative(lib, file).split('/')
  return second === undefined ? first.replace(/\.(d\.)?ts$/, '') : first
}

test('imports in lib/ run one way: cli -> serve, model -> manager -> policy, cuda -> errors', (t) => {
  const wrong = []
  for (const f of files(lib)) {
    const from = room(f)
    for (const m of readFileSync(f, 'utf8').matchAll(/from '(\.[^']+)'/g)) {
      const to = room(join(f, '..', m[1].replace(/\.js$/, '.ts')))
      if (to !== from && !ALLOWED[from].includes(to)) wrong.push(`${relative(lib, f)} imports ${m[1]} (${from} -> ${to})`)
    }
    if (/from '\.\.\/\.\.\/(bench|peers)/.test(readFileSync(f, 'utf8'))) wrong.push(`${relative(lib, f)} imports bench/ or peers/`)
  }
  t.deepEqual(wrong, [])
})
