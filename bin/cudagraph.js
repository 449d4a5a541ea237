#!/usr/bin/env node
// The `cudagraph` command: see dist/cli/main.js (lib/cli/main.ts) for the commands and exit codes.

require('../dist/cli/main.js')
  .main(process.argv.slice(2))
  .then(
    (code) => {
      process.exitCode = code
      // serve has released the GPU and its socket: nothing a library left open (a timer, a metrics
      // collector) may keep it alive after SIGTERM.
      if (process.argv[2] === 'serve') process.exit(code)
    },
    (e) => {
      // A command that failed at run time: one clear line (the error's class and message), exit code 1.
      // CUDAGRAPH_DEBUG=1 shows the stack.
      const what = e instanceof Error ? `${e.name}: ${e.message}` : String(e)
      process.stderr.write(`cudagraph ${process.argv[2] ?? ''}: ${what}\n`)
      if (process.env.CUDAGRAPH_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`)
      process.exit(1)
    },
  )
