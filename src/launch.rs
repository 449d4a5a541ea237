//! `launchKernel`: the eager kernel launch, one napi call whose operands are in the launch mailbox.

use crate::error::{arg_error, disposed, IntoJs, Result};
use crate::handles::{Handle, BUFFERS, KERNELS, STREAMS};
use crate::mailbox::{self, GEOMETRY, KERNEL, KERNEL_HEADER};
use cudagraph_core as core;
use napi_derive::napi;

fn dim(packed: &[f64], i: usize) -> Result<u32> {
    let v = packed[i];
    if v.fract() != 0.0 || !(1.0..=u32::MAX as f64).contains(&v) {
        let (arg, which) = if i < 3 { ("grid", i) } else { ("block", i - 3) };
        return Err(arg_error(&format!("{arg}[{which}]"), "a positive integer", v));
    }
    Ok(v as u32)
}

/// Launches a kernel. The mailbox holds, from slot `KERNEL`: the stream and kernel handles, the geometry,
/// then one slot per kernel parameter: a buffer handle for `ptr`, the value for scalars. The TypeScript
/// layer has checked each argument's kind; values and handles are checked here. Takes no arguments: every
/// napi argument costs more than the rest of the call.
#[napi(catch_unwind)]
pub fn launch_kernel() -> Result<()> {
    launch_from_mailbox(None)
}

/// `launchKernel` for kernels given bigints beyond 2^53: an `i64`/`u64` slot holding NaN takes its value
/// from `wide` at the same parameter index.
#[napi(catch_unwind)]
pub fn launch_kernel_wide(wide: &[i64]) -> Result<()> {
    launch_from_mailbox(Some(wide))
}

fn launch_from_mailbox(wide: Option<&[i64]>) -> Result<()> {
    mailbox::with(|slots| {
        let (stream, kernel) = (slots[KERNEL] as Handle, slots[KERNEL + 1] as Handle);
        launch(stream, kernel, &slots[KERNEL + 2..], wide)
    })
}

fn launch(stream: Handle, kernel: Handle, packed: &[f64], wide: Option<&[i64]>) -> Result<()> {
    STREAMS.with(|streams| {
        let streams = streams.borrow();
        let stream = streams.get(stream).ok_or_else(|| disposed("stream"))?;
        KERNELS.with(|kernels| {
            let kernels = kernels.borrow();
            let kernel = kernels.get(kernel).ok_or_else(|| disposed("kernel"))?;
            let sig = kernel.signature();
            if packed.len() < GEOMETRY + sig.len() {
                return Err(arg_error("mailbox", &format!("{} slots", KERNEL + KERNEL_HEADER + sig.len()), packed.len() + KERNEL + 2));
            }
            let cfg = core::LaunchConfig {
                grid: [dim(packed, 0)?, dim(packed, 1)?, dim(packed, 2)?],
                block: [dim(packed, 3)?, dim(packed, 4)?, dim(packed, 5)?],
                shared_mem_bytes: {
                    let v = packed[6];
                    if v.fract() != 0.0 || !(0.0..=u32::MAX as f64).contains(&v) {
                        return Err(arg_error("sharedMemBytes", "a non-negative integer", v));
                    }
                    v as u32
                },
                // Slot 7: launch flags; bit 0 asks for programmatic dependent launch, bit 1 for a cooperative launch.
                programmatic: packed[7] as u32 & 1 != 0,
                cooperative: packed[7] as u32 & 2 != 0,
            };
            BUFFERS.with(|buffers| {
                let buffers = buffers.borrow();
                let mut args: Vec<core::KernelArg> = Vec::with_capacity(sig.len());
                for (i, kind) in sig.iter().enumerate() {
                    let v = packed[GEOMETRY + i];
                    args.push(match kind {
                        core::ArgKind::Ptr => core::KernelArg::Buffer(buffers.get(v as Handle).ok_or_else(|| disposed("buffer"))?),
                        core::ArgKind::I64 | core::ArgKind::U64 if v.is_nan() => {
                            let bits = wide
                                .and_then(|w| w.get(i).copied())
                                .ok_or_else(|| arg_error(&format!("args[{i}]"), "a number or bigint", "NaN"))?;
                            core::KernelArg::BigInt(if *kind == core::ArgKind::U64 { bits as u64 as i128 } else { bits as i128 })
                        }
                        _ => core::KernelArg::Number(v),
                    });
                }
                stream.launch(kernel, &cfg, &args).js()
            })
        })
    })
}
