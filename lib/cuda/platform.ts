/**
 * Which prebuilt binary this machine needs: napi-rs's platform names (`linux-x64-gnu`) and the npm
 * package that carries each (`cudagraph-linux-x64-gnu`, under npm/ in the repository). Only platforms
 * whose binary is built and loaded in the release are listed.
 * @internal
 */
import { readFileSync } from 'node:fs'

/** Platforms with a prebuilt binary (npm/<platform>/). */
export const PREBUILT_PLATFORMS: readonly string[] = ['linux-x64-gnu', 'linux-arm64-gnu']

function isMusl(): boolean {
  try {
    return readFileSync('/usr/bin/ldd', 'utf8').includes('musl')
  } catch {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
    return report?.header?.glibcVersionRuntime === undefined
  }
}

/** This machine's platform name, e.g. `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`. */
export function platformName(): string {
  const base = `${process.platform}-${process.arch}`
  if (process.platform === 'linux') return `${base}-${isMusl() ? 'musl' : 'gnu'}`
  if (process.platform === 'win32') return `${base}-msvc`
  return base
}

/** The npm package with the binary for `platform`. */
export function platformPackage(platform: string): string {
  return `cudagraph-${platform}`
}
