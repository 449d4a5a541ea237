// The package as a user gets it: `npm pack`, install the tarball into a fresh project with no network,
// type-check a TypeScript file that imports it, and load it.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

test('npm pack installs offline and type-checks in a consumer project', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cudagraph-consumer-'))
  try {
    const packed = JSON.parse(execFileSync(npm, ['pack', '--json', '--ignore-scripts', '--pack-destination', dir], { cwd: root, encoding: 'utf8' }))
    const files = packed[0].files.map((f) => f.path)
    t.true(files.includes('dist/index.d.ts'))
    t.true(files.some((f) => /^cudagraph\..+\.node$/.test(f)), 'the prebuilt binary is in the tarball')
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
    execFileSync(npm, ['install', '--offline', '--no-audit', '--no-fund', join(dir, packed[0].filename)], { cwd: dir, encoding: 'utf8', stdio: 'pipe' })
    writeFileSync(
      join(dir, 'main.ts'),
      `import { Device, CaptureError, type Graph, type DeviceBuffer } from 'cudagraph'
const a = Device.availability()
export function run(): number {
  if (!a.available) return 0
  const dev = Device.open(0)
  const s = dev.createStream()
  const mod = dev.compile('extern "C" __global__ void k(float* x, int n) {}', { name: 'k' })
  const k = mod.kernel('k', ['ptr', 'i32'])
  const x: DeviceBuffer<'f32'> = dev.alloc('f32', 16)
  // @ts-expect-error the signature makes the second argument a number
  s.launch(k, { grid: 1, block: 16 }, [x, x])
  const g: Graph = s.capture(() => s.launch(k, { grid: 1, block: 16 }, [x, 16]))
  g.launch(s)
  const host: Float32Array = x.download()
  return host.length + (new CaptureError('x').code === 'CAPTURE_ERROR' ? 1 : 0)
}
`,
    )
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: false }, files: ['main.ts'] }),
    )
    execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { cwd: dir, encoding: 'utf8', stdio: 'pipe' })
    const out = execFileSync(process.execPath, ['-e', "console.log(typeof require('cudagraph').Device.availability().available)"], { cwd: dir, encoding: 'utf8' })
    t.is(out.trim(), 'boolean')
  } catch (e) {
    t.fail(`${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
