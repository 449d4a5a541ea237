// The release as a user gets it (CPU): scripts/release.mjs packs the main package and this platform's
// package; both tarballs go into a fresh project with no cargo or rustc on PATH, npm taking what else it
// needs from the cache the project's own install filled (--prefer-offline). Then: require and import work,
// the policy layer runs with no GPU, `npx cudagraph info` says there is no GPU (exit code 1), and a
// consumer .ts file type-checks under strict, including what must not type-check.

import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'ava'
import { platformName } from '../dist/cuda/platform.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const platform = platformName()
const binary = join(root, `cudagraph.${platform}.node`)
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

/** PATH without the folders that hold cargo or rustc: the install must build nothing. */
function pathWithoutRust() {
  return (process.env.PATH ?? '')
    .split(delimiter)
    .filter((d) => !existsSync(join(d, 'cargo')) && !existsSync(join(d, 'rustc')))
    .join(delimiter)
}

const CONSUMER_TS = `import { Device, Dispatcher, GraphConfig, GraphRegistry, type Graph, type MemoryInfo } from 'cudagraph'
import { Client, ProtocolError } from 'cudagraph/serve'
import type { DecoderModel } from 'cudagraph/model'

const config = GraphConfig.from({ mode: 'FULL_AND_PIECEWISE', maxNumSeqs: 64, maxGraphs: 32 })
const dispatcher = new Dispatcher(config)
dispatcher.initializeKeys()
export const padded: number = dispatcher.dispatch(13, { uniformDecode: true }).descriptor.numTokens
// The README's registry line, as written there.
export const graphs = GraphRegistry.fromConfig(config, { onEvict: (e) => e.value.dispose() })
export const typed = GraphRegistry.fromConfig<Graph, string>(config, { onEvict: (e) => e.value.dispose() })
export function free(m: MemoryInfo): number {
  return m.free
}
export type Model = DecoderModel
export const client: typeof Client.connect = Client.connect
export const err = new ProtocolError('x')
export const avail = Device.availability()

// @ts-expect-error a misspelt graph mode is a type error
GraphConfig.from({ mode: 'FUL' })
// @ts-expect-error the wrapper classes are made by the SDK, never constructed by users
export const g = new (await import('cudagraph')).Graph()
// @ts-expect-error the Device constructor is private too (Device.open)
export const d = new Device()
`

test('a release installs from its tarballs with no Rust, loads, runs the policy layer and type-checks', (t) => {
  if (!existsSync(binary)) {
    t.fail(`${binary} is missing: npm install builds it (it is what the platform tarball carries)`)
    return
  }
  const dir = mkdtempSync(join(tmpdir(), 'cudagraph-release-'))
  try {
    const out = join(dir, 'tarballs')
    const summary = JSON.parse(
      execFileSync(process.execPath, [join(root, 'scripts', 'release.mjs'), '--out', out], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .pop(),
    )
    const main = summary.tarballs.find((x) => x.platform === 'main')
    const plat = summary.tarballs.find((x) => x.platform === platform)
    t.truthy(main && plat, JSON.stringify(summary))
    t.log(summary.tarballs.map((x) => `${x.file} ${(x.bytes / 1024).toFixed(0)} KiB`).join(', '))

    // The main tarball: no binary, no Rust sources, no install hook; the platform packages as optional dependencies.
    const listing = execFileSync('tar', ['-tzf', join(out, main.file)], { encoding: 'utf8' }).split('\n')
    t.false(
      listing.some((f) => f.endsWith('.node') || f.endsWith('.rs') || f.endsWith('Cargo.toml')),
      'no binary or Rust source in the main tarball',
    )
    const pkg = JSON.parse(execFileSync('tar', ['-xzOf', join(out, main.file), 'package/package.json'], { encoding: 'utf8' }))
    t.is(pkg.scripts, undefined)
    t.deepEqual(pkg.optionalDependencies, { 'cudagraph-linux-arm64-gnu': pkg.version, 'cudagraph-linux-x64-gnu': pkg.version })
    t.true(listing.includes('package/LICENSE') && listing.includes('package/dist/index.d.ts') && listing.includes('package/dist/cuda/binding.d.ts'))

    const app = join(dir, 'app')
    execFileSync('mkdir', [app])
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
    const env = { ...process.env, PATH: pathWithoutRust() }
    t.is(spawnSync('cargo', ['--version'], { env }).status === 0, false, 'cargo is off PATH for the install')
    execFileSync(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', join(out, main.file), join(out, plat.file)], {
      cwd: app,
      env,
      encoding: 'utf8',
      stdio: 'pipe',
    })

    // Node in the consumer project, with no Rust on PATH: what it prints.
    const node = (...args) => execFileSync(process.execPath, args, { cwd: app, env, encoding: 'utf8' }).trim()
    t.is(
      node(
        '-e',
        "const c = require('cudagraph'); const d = new c.Dispatcher(c.GraphConfig.from({ maxNumSeqs: 8 })); d.initializeKeys(); console.log(d.dispatch(3, { uniformDecode: true }).descriptor.numTokens, typeof c.Device.availability().available)",
      ),
      '4 boolean',
    )
    t.is(
      node(
        '--input-type=module',
        '-e',
        "import { GraphConfig } from 'cudagraph'; import { encode, MessageType } from 'cudagraph/serve'; import { MODEL_PRESETS } from 'cudagraph/model'; console.log(GraphConfig.from({}).mode, encode({ type: MessageType.PING, nonce: 1n }).length, Object.keys(MODEL_PRESETS).length)",
      ),
      'FULL_AND_PIECEWISE 14 3',
    )
    // Package data is found where the installed code looks for it.
    t.is(
      node(
        '-e',
        "const fs = require('fs'); const path = require('path'); const { DECODER_KERNELS_PATH } = require('cudagraph/model'); const root = path.dirname(require.resolve('cudagraph/package.json')); console.log(fs.existsSync(DECODER_KERNELS_PATH), fs.existsSync(path.join(root, 'peers', 'hf_decoder.py')), fs.existsSync(path.join(root, 'bin', 'cudagraph.js')))",
      ),
      'true true true',
    )

    const info = spawnSync(npm, ['exec', '--offline', '--', 'cudagraph', 'info'], { cwd: app, env, encoding: 'utf8' })
    if (info.status === 1) t.regex(info.stderr, /cudagraph info: no usable CUDA GPU here/)
    else t.is(info.status, 0, info.stderr)
    const version = spawnSync(npm, ['exec', '--offline', '--', 'cudagraph', '--version'], { cwd: app, env, encoding: 'utf8' })
    t.is(version.stdout.trim(), pkg.version)

    writeFileSync(join(app, 'main.ts'), CONSUMER_TS)
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: [],
          typeRoots: [join(root, 'node_modules', '@types')],
        },
        files: ['main.ts'],
      }),
    )
    const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], { cwd: app, encoding: 'utf8' })
    t.is(tsc.status, 0, tsc.stdout + tsc.stderr)
  } catch (e) {
    t.fail(`${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('without its binary the package still imports; what needs it throws NativeBindingError naming the platform and package', async (t) => {
  const env = { ...process.env, CUDAGRAPH_NATIVE_PATH: join(root, 'no-such-binary.node') }
  const r = spawnSync(
    process.execPath,
    [
      '-e',
      `const c = require(${JSON.stringify(join(root, 'dist', 'index.js'))})
const d = new c.Dispatcher(c.GraphConfig.from({ maxNumSeqs: 8 })); d.initializeKeys(); console.log(d.dispatch(5).descriptor.numTokens)
try { c.Device.open(0) } catch (e) { console.log(e.name, e.code, e.platform, e.package, /npm install/.test(e.message)) }
console.log(c.Device.availability().available)`,
    ],
    { env, encoding: 'utf8' },
  )
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.stdout.trim().split('\n'), ['8', `NativeBindingError NATIVE_UNAVAILABLE ${platform} cudagraph-${platform} true`, 'false'])
  t.false(readFileSync(join(root, 'dist', 'index.js'), 'utf8').includes('.node'), 'the root module does not load the binary')
})

test("a clone's install hook without cargo says so in one line and exits 1, no stack trace", (t) => {
  const env = { ...process.env, PATH: pathWithoutRust(), npm_execpath: '' }
  delete env.CUDAGRAPH_SKIP_BUILD
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'install.cjs')], { env, encoding: 'utf8' })
  t.is(r.status, 1)
  const lines = r.stderr.trim().split('\n')
  t.is(lines.length, 1, r.stderr)
  t.regex(lines[0], /^cudagraph: building the native addon from source needs Rust \(cargo\), and none is on PATH/)
})
