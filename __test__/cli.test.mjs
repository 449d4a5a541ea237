// The `cudagraph` command's conventions (CPU): --version, per-command --help, one-line usage errors that
// name the flag and what is allowed, "did you mean", strict numbers, and the documented exit codes
// (0 done, 1 runtime failure or no GPU, 2 usage error).

import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { parseBenchFlags, parseClientFlags, parseGenerateFlags, parseServeFlags } from '../dist/cli/main.js'

const bin = new URL('../bin/cudagraph.js', import.meta.url).pathname
const run = (...a) => spawnSync(process.execPath, [bin, ...a], { encoding: 'utf8' })

test('bench flags: defaults, and each bad flag names itself, what it got and what is allowed', (t) => {
  const d = parseBenchFlags([])
  t.is(d.model, 'small')
  t.deepEqual(d.promptLengths, [10, 50, 100, 150, 200, 250, 300, 350, 400])
  t.is(d.mode, 'FULL')
  t.true(d.peer && d.print)
  const o = parseBenchFlags(['--model', 'tiny', '--batch-sizes', '4,1,2', '--tokens', '8', '--mode', 'NONE', '--json', '--no-peer'])
  t.deepEqual([o.model, o.batchSizes, o.tokens, o.mode, o.print, o.peer], ['tiny', [1, 2, 4], 8, 'NONE', false, false])
  t.throws(() => parseBenchFlags(['--model', 'big']), {
    message: /--model: expected tiny, small, 1b or a Hugging Face model directory \(with config.json\), got 'big'/,
  })
  t.throws(() => parseBenchFlags(['--dtype', 'f32']), { message: /--dtype: expected one of f16, bf16/ })
  t.is(parseBenchFlags([]).prefillAttention, undefined)
  t.is(parseBenchFlags(['--prefill-attention', 'flash']).prefillAttention, 'flash')
  t.deepEqual([parseBenchFlags([]).peerCompile, parseBenchFlags(['--peer-compile']).peerCompile], [false, true])
  t.throws(() => parseBenchFlags(['--prefill-attention', 'fast']), { message: /--prefill-attention: expected one of flash, rows/ })
  // A directory with a config.json is a checkpoint.
  const dir = mkdtempSync(join(tmpdir(), 'cudagraph-cli-'))
  writeFileSync(join(dir, 'config.json'), '{}')
  t.deepEqual(parseBenchFlags(['--model', dir, '--dtype', 'bf16']).model, { dir })
  t.is(parseBenchFlags(['--model', dir, '--dtype', 'bf16']).dtype, 'bf16')
  rmSync(dir, { recursive: true })
  t.throws(() => parseBenchFlags(['--batch-sizes', '1,x']), { message: /--batch-sizes: expected comma-separated integers in 1\.\.256, got '1,x'/ })
  t.throws(() => parseBenchFlags(['--batch-sizes', '512']), { message: /1\.\.256/ })
  t.throws(() => parseBenchFlags(['--tokens', '0']), { message: /--tokens: expected an integer in 1\.\.1024/ })
  t.throws(() => parseBenchFlags(['--mode', 'ALL']), { message: /--mode: expected one of NONE, PIECEWISE, FULL/ })
  t.throws(() => parseBenchFlags(['--mode', 'FUL']), { message: /did you mean 'FULL'/ })
  t.throws(() => parseBenchFlags(['--colour']), { message: /unknown flag '--colour'/ })
})

test('generate flags: a model directory and a prompt are required; sampling numbers are ranged', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cudagraph-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true }))
  t.throws(() => parseGenerateFlags(['--model', dir, '--prompt', 'hi']), { message: /--model: '.*' is not a Hugging Face model directory \(no config.json\)/ })
  writeFileSync(join(dir, 'config.json'), '{}')
  t.throws(() => parseGenerateFlags(['--model', dir]), { message: /--prompt: the prompt text is required/ })
  t.throws(() => parseGenerateFlags(['--prompt', 'hi']), { message: /--model: a Hugging Face model directory is required/ })
  const o = parseGenerateFlags([
    '--model',
    dir,
    '--prompt',
    'hi',
    '--chat',
    '--system',
    'be brief',
    '--temperature',
    '0.7',
    '--top-p',
    '0.9',
    '--top-k',
    '40',
    '--seed',
    '5',
    '--stop',
    'a,b',
  ])
  t.like(o, { dir, prompt: 'hi', chat: true, system: 'be brief', temperature: 0.7, topP: 0.9, topK: 40, seed: 5, graphs: true })
  t.deepEqual(o.stop, ['a', 'b'])
  t.is(parseGenerateFlags(['--model', dir, '--prompt', 'hi']).temperature, undefined, 'unset: the model decides')
  t.throws(() => parseGenerateFlags(['--model', dir, '--prompt', 'hi', '--temperature=-1']), {
    message: /--temperature: expected a number in 0\.\.100, got '-1'/,
  })
  t.throws(() => parseGenerateFlags(['--model', dir, '--prompt', 'hi', '--top-p', '0']), { message: /--top-p/ })
  t.throws(() => parseGenerateFlags(['--model', dir, '--prompt', 'hi', '--temperature', 'hot']), { message: /--temperature/ })
  t.throws(() => parseGenerateFlags(['--model', dir, '--prompt', 'hi', '--system', 'x']), { message: /--system: needs --chat/ })
})

test('numbers are strict: empty, blank, fractional, signed-out-of-range and gapped lists are refused, never read as 0', (t) => {
  for (const bad of ['', ' ', '1.5', '1e3', '0x10', '12abc', '65536']) {
    t.throws(
      () => parseServeFlags(['--socket', '/tmp/s', '--metrics-port', bad]),
      { message: /--metrics-port: expected an integer in 0\.\.65535/ },
      JSON.stringify(bad),
    )
  }
  t.throws(() => parseServeFlags(['--socket', '/tmp/s', '--metrics-port=-1']), { message: /--metrics-port: expected an integer in 0\.\.65535, got '-1'/ })
  t.is(parseServeFlags(['--socket', '/tmp/s', '--metrics-port', '0']).metricsPort, 0)
  for (const bad of ['1,,2', '', ' ', '1,2,', '1;2', '-1', '1.5']) {
    t.throws(() => parseClientFlags(['--socket', '/tmp/s', '--prompt-tokens', bad]), { message: /--prompt-tokens/ }, JSON.stringify(bad))
  }
  t.deepEqual(parseClientFlags(['--socket', '/tmp/s', '--prompt-tokens', '1, 2,3']).prompt, [1, 2, 3])
  t.throws(() => parseServeFlags(['--socket', '']), { message: /--socket: the Unix socket path to listen on is required/ })
})

test('the command: --version, help per command, usage errors in one line with where the help is, exit codes', (t) => {
  const v = run('--version')
  t.is(v.status, 0)
  t.is(v.stdout.trim(), JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version)
  t.is(run('--help').status, 0)
  t.is(run().status, 2)
  for (const cmd of ['info', 'bench', 'serve', 'client']) {
    const h = run(cmd, '--help')
    t.is(h.status, 0, cmd)
    t.regex(h.stdout, new RegExp(`^usage: cudagraph ${cmd}`), cmd)
  }
  t.regex(run('bench', '--serve', '--help').stdout, /^usage: cudagraph bench --serve/)

  const bad = run('bnech')
  t.is(bad.status, 2)
  t.deepEqual(bad.stderr.trim().split('\n'), [
    "cudagraph: unknown command 'bnech'; did you mean 'bench'? (commands: info, bench, generate, serve, client)",
    "run 'cudagraph --help'",
  ])
  const flag = run('bench', '--tokenz', '3')
  t.is(flag.status, 2)
  const lines = flag.stderr.trim().split('\n')
  t.is(lines.length, 2)
  t.regex(lines[0], /^cudagraph bench: unknown flag '--tokenz'; did you mean '--tokens'\?/)
  t.is(lines[1], "run 'cudagraph bench --help'")
  const model = run('bench', '--model', 'big')
  t.is(model.status, 2)
  t.regex(model.stderr, /--model: expected tiny, small, 1b or a Hugging Face model directory \(with config.json\), got 'big'/)
  t.is(run('serve', '--socket', '/tmp/x', '--metrics-port', '').status, 2)

  const info = run('info')
  if (info.status === 1) t.regex(info.stderr, /^cudagraph info: no usable CUDA GPU here/)
  else t.regex(info.stdout, /compute capability/)
})

test('a command that fails at run time is one clear line and exit code 1, not a stack trace', (t) => {
  // A client with no server behind its socket: RefusedError, said in one line.
  const r = run('client', '--socket', '/nonexistent/cudagraph.sock', '--prompt-tokens', '1,2')
  t.is(r.status, 1)
  t.regex(r.stderr.trim(), /^cudagraph client: RefusedError: no generator is listening on \/nonexistent\/cudagraph\.sock/)
  t.false(/\n\s+at /.test(r.stderr), 'no stack trace')
})
