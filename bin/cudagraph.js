#!/usr/bin/env node
// The `cudagraph` command: see dist/cli.js (lib/cli.ts).
'use strict'
require('../dist/cli.js')
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code
    // serve has released the GPU and its socket: nothing a library left open (a timer, a metrics
    // collector) may keep it alive after SIGTERM.
    if (process.argv[2] === 'serve') process.exit(code)
  })
