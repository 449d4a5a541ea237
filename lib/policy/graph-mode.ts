/**
 * Graph modes, as in vLLM's `CUDAGraphMode`. NONE, PIECEWISE and FULL are runtime modes; the two
 * composite modes pick one routine for uniform decode batches and another for mixed batches.
 */
import { ConfigError } from '../errors.js'

/** How batches run: eagerly, as piecewise graphs, as full graphs, or per batch kind. */
export type GraphMode = 'NONE' | 'PIECEWISE' | 'FULL' | 'FULL_DECODE_ONLY' | 'FULL_AND_PIECEWISE'

/** A mode a single batch actually runs in. */
export type RuntimeMode = 'NONE' | 'PIECEWISE' | 'FULL'

/** The graph modes by name. */
export const GraphMode = Object.freeze({
  NONE: 'NONE',
  PIECEWISE: 'PIECEWISE',
  FULL: 'FULL',
  /** FULL for uniform decode batches, NONE for mixed batches. */
  FULL_DECODE_ONLY: 'FULL_DECODE_ONLY',
  /** FULL for uniform decode batches, PIECEWISE for mixed batches. */
  FULL_AND_PIECEWISE: 'FULL_AND_PIECEWISE',
} as const satisfies Record<GraphMode, GraphMode>)

/** Every graph mode. */
export const GRAPH_MODES: readonly GraphMode[] = Object.freeze(Object.values(GraphMode))

const RANK: Record<RuntimeMode, number> = { NONE: 0, PIECEWISE: 1, FULL: 2 }
const ROUTINES: Record<GraphMode, readonly [RuntimeMode, RuntimeMode]> = {
  NONE: ['NONE', 'NONE'],
  PIECEWISE: ['PIECEWISE', 'PIECEWISE'],
  FULL: ['FULL', 'FULL'],
  FULL_DECODE_ONLY: ['FULL', 'NONE'],
  FULL_AND_PIECEWISE: ['FULL', 'PIECEWISE'],
}

/** Whether uniform decode batches and mixed batches use different routines (the composite modes). */
export function separateRoutine(mode: GraphMode): boolean {
  return mode === 'FULL_DECODE_ONLY' || mode === 'FULL_AND_PIECEWISE'
}

/** The runtime mode for uniform decode batches. */
export function decodeMode(mode: GraphMode): RuntimeMode {
  return ROUTINES[mode][0]
}

/** The runtime mode for mixed (prefill or non-uniform) batches. */
export function mixedMode(mode: GraphMode): RuntimeMode {
  return ROUTINES[mode][1]
}

/** Whether `mode` ever runs batches in runtime mode `runtime`. */
export function hasMode(mode: GraphMode, runtime: RuntimeMode): boolean {
  const [d, m] = ROUTINES[mode]
  return d === runtime || m === runtime
}

/** The highest runtime mode `mode` uses (FULL > PIECEWISE > NONE). */
export function maxMode(mode: GraphMode): RuntimeMode {
  const [d, m] = ROUTINES[mode]
  return RANK[d] >= RANK[m] ? d : m
}

/** Whether any batch runs as a full graph. */
export function hasFullGraphs(mode: GraphMode): boolean {
  return maxMode(mode) === 'FULL'
}

/** Whether any batch runs as piecewise graphs. */
export function hasPiecewiseGraphs(mode: GraphMode): boolean {
  return hasMode(mode, 'PIECEWISE')
}

/** Parses a mode name (case-insensitive; `-` or `_`). A bad name is a ConfigError at `path`. */
export function parseGraphMode(name: unknown, path = 'mode'): GraphMode {
  const s = typeof name === 'string' ? name.trim().toUpperCase().replaceAll('-', '_') : ''
  if (!(GRAPH_MODES as readonly string[]).includes(s)) throw new ConfigError(path, name, `one of ${GRAPH_MODES.join(', ')}`)
  return s as GraphMode
}

/** The mode's name (the inverse of {@link parseGraphMode}). */
export function graphModeName(mode: GraphMode): string {
  return mode
}
