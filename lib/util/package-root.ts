import { join } from 'node:path'

/**
 * The installed package's root folder (dist/util is two below it): where package data is found
 * (kernels/, peers/, bin/, package.json, a clone's built addon). The one place that knows dist's depth.
 */
export const PACKAGE_ROOT = join(__dirname, '..', '..')
