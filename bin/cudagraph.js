#!/usr/bin/env node
// The `cudagraph` command: see dist/cli.js (lib/cli.ts).
'use strict'
require('../dist/cli.js')
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code
  })
