/**
 * The generated napi-rs binding. Only this SDK imports it; users import the package root, never the
 * `.node` file, so every native error passes through {@link mapError}.
 * @internal
 */
import * as binding from '../index.js'

export = binding
