//! NVRTC compilation, loaded modules and kernels with declared signatures.

use crate::device::Device;
use crate::error::{Check, Error, Result};
use crate::kernel_cache::{CacheEntry, CacheKey, KernelCache};
use crate::libs;
use cudarc::driver::sys;
use cudarc::nvrtc::{result as rtc, sys as rtc_sys};
use std::cell::Cell;
use std::ffi::{c_char, CString};
use std::rc::Rc;

/// The kind of one kernel parameter, as declared by the caller and checked at every launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A device pointer: a buffer on the kernel's device.
    Ptr,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl ArgKind {
    /// Parses `'ptr' | 'i32' | 'u32' | 'i64' | 'u64' | 'f32' | 'f64'`.
    pub fn parse(arg: &str, s: &str) -> Result<ArgKind> {
        Ok(match s {
            "ptr" => ArgKind::Ptr,
            "i32" => ArgKind::I32,
            "u32" => ArgKind::U32,
            "i64" => ArgKind::I64,
            "u64" => ArgKind::U64,
            "f32" => ArgKind::F32,
            "f64" => ArgKind::F64,
            _ => return Err(Error::arg(arg, "one of ptr, i32, u32, i64, u64, f32, f64", format!("'{s}'"))),
        })
    }

    /// The API name.
    pub fn name(self) -> &'static str {
        match self {
            ArgKind::Ptr => "ptr",
            ArgKind::I32 => "i32",
            ArgKind::U32 => "u32",
            ArgKind::I64 => "i64",
            ArgKind::U64 => "u64",
            ArgKind::F32 => "f32",
            ArgKind::F64 => "f64",
        }
    }
}

/// A loaded module (cubin or PTX from NVRTC), unloaded on drop.
#[derive(Debug)]
pub struct Module {
    device: Rc<Device>,
    raw: sys::CUmodule,
    name: String,
    log: String,
    target: String,
    cached: bool,
}

/// NVRTC programs are destroyed on every path.
struct Program(rtc_sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram, destroyed once.
        let _ = unsafe { rtc::destroy_program(self.0) };
    }
}

/// The target NVRTC compiles for: the device's own `sm_XY` when NVRTC knows it (a cubin, no JIT), else
/// the newest older `compute_XY` it knows (PTX, which the driver compiles at load).
fn pick_target(cc: (i32, i32)) -> Result<(String, bool)> {
    let want = cc.0 * 10 + cc.1;
    let mut n = 0;
    // SAFETY: writes one int.
    unsafe { rtc_sys::nvrtcGetNumSupportedArchs(&mut n) }.result().map_err(|e| Error::Unavailable(format!("NVRTC: {e:?}")))?;
    let mut archs = vec![0i32; n.max(0) as usize];
    // SAFETY: `archs` holds the number of entries NVRTC just reported.
    unsafe { rtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }.result().map_err(|e| Error::Unavailable(format!("NVRTC: {e:?}")))?;
    if archs.contains(&want) {
        return Ok((format!("sm_{want}"), true));
    }
    let best = archs
        .iter()
        .copied()
        .filter(|&a| a <= want)
        .max()
        .ok_or_else(|| Error::Unavailable(format!("NVRTC supports none of the architectures up to sm_{want} (it knows {archs:?})")))?;
    Ok((format!("compute_{best}"), false))
}

/// NVRTC's log and image (a cubin, or NUL-terminated PTX) for `src` compiled with `opts`.
fn nvrtc_compile(src: &CString, cname: &CString, name: &str, opts: &[String], cubin: bool) -> Result<CacheEntry> {
    let prog = Program(rtc::create_program(src, Some(cname)).map_err(|e| Error::Compile {
        name: name.into(),
        status: format!("{e:?}"),
        log: String::new(),
    })?);
    // SAFETY: `prog` is live; options are NUL-free (checked by the caller).
    let compiled = unsafe { rtc::compile_program(prog.0, opts) };
    // SAFETY: `prog` is live.
    let log = unsafe { rtc::get_program_log(prog.0) }
        .map(|l| {
            // SAFETY: NVRTC's log is a NUL-terminated C string.
            unsafe { std::ffi::CStr::from_ptr(l.as_ptr()) }.to_string_lossy().trim_end().to_string()
        })
        .unwrap_or_default();
    if let Err(e) = compiled {
        return Err(Error::Compile { name: name.into(), status: format!("{:?}", e.0), log });
    }
    let failed = |e: rtc_sys::nvrtcResult, log: &str| Error::Compile { name: name.into(), status: format!("{e:?}"), log: log.into() };
    let image: Vec<u8> = if cubin {
        let mut size = 0usize;
        // SAFETY: `prog` compiled; writes one size.
        unsafe { rtc_sys::nvrtcGetCUBINSize(prog.0, &mut size) }.result().map_err(|e| failed(e.0, &log))?;
        let mut bin = vec![0u8; size];
        // SAFETY: `bin` holds the size NVRTC reported.
        unsafe { rtc_sys::nvrtcGetCUBIN(prog.0, bin.as_mut_ptr() as *mut c_char) }.result().map_err(|e| failed(e.0, &log))?;
        bin
    } else {
        // SAFETY: `prog` compiled.
        let ptx = unsafe { rtc::get_ptx(prog.0) }.map_err(|e| failed(e.0, &log))?;
        ptx.into_iter().map(|c| c as u8).collect()
    };
    Ok(CacheEntry { log, image })
}

impl Module {
    /// Compiles CUDA C++ `source` with NVRTC for `device` and loads it. `options` are NVRTC options
    /// (`-DNAME=1`, `--use_fast_math`, ...); an architecture option there overrides the automatic one.
    /// Kernels should be `extern "C"` so they are found by name. With `cache`, NVRTC's output is kept in the
    /// on-disk kernel cache ([`KernelCache::from_env`]) and taken from there when the same compile was done
    /// before; without, NVRTC always runs (a probe that NVRTC works).
    pub fn compile(device: &Rc<Device>, source: &str, name: &str, options: &[String], cache: bool) -> Result<Rc<Module>> {
        libs::nvrtc()?;
        let src = CString::new(source).map_err(|_| Error::arg("source", "text without NUL bytes", "a NUL byte"))?;
        let cname = CString::new(name).map_err(|_| Error::arg("name", "text without NUL bytes", "a NUL byte"))?;
        let user_arch = options.iter().any(|o| o.starts_with("--gpu-architecture") || o.starts_with("-arch"));
        let (target, cubin) = if user_arch {
            let o = options.iter().find(|o| o.starts_with("--gpu-architecture") || o.starts_with("-arch")).unwrap();
            (o.rsplit(['=', ' ']).next().unwrap_or("").to_string(), o.contains("sm_"))
        } else {
            pick_target(device.compute_capability()?)?
        };
        let mut opts: Vec<String> = options.to_vec();
        if !user_arch {
            opts.push(format!("--gpu-architecture={target}"));
        }
        if opts.iter().any(|o| o.contains('\0')) {
            return Err(Error::arg("options", "options without NUL bytes", "a NUL byte"));
        }
        let (mut major, mut minor) = (0, 0);
        // SAFETY: writes two ints.
        unsafe { rtc_sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|e| Error::Unavailable(format!("NVRTC: {e:?}")))?;
        let key = CacheKey::new(source, &opts, &target, (major, minor));
        let cache = if cache { KernelCache::from_env() } else { None };
        if let Some(c) = &cache {
            if let Some(hit) = c.load(name, &key) {
                match Module::load(device, hit, name, &target, true) {
                    Ok(m) => return Ok(m),
                    // An image the driver refuses (damaged, or from a driver it no longer accepts): compile anew.
                    Err(_) => c.remove(name, &key),
                }
            }
        }
        let entry = nvrtc_compile(&src, &cname, name, &opts, cubin)?;
        if let Some(c) = &cache {
            c.store(name, &key, &entry);
        }
        Module::load(device, entry, name, &target, false)
    }

    /// Loads a compiled image on `device`.
    fn load(device: &Rc<Device>, entry: CacheEntry, name: &str, target: &str, cached: bool) -> Result<Rc<Module>> {
        device.bind()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `image` is a complete cubin or NUL-terminated PTX and outlives the call.
        unsafe { sys::cuModuleLoadData(&mut raw, entry.image.as_ptr() as *const _) }.check("cuModuleLoadData")?;
        Ok(Rc::new(Module { device: device.clone(), raw, name: name.into(), log: entry.log, target: target.into(), cached }))
    }

    /// Whether the image came from the on-disk kernel cache rather than from NVRTC.
    pub fn cached(&self) -> bool {
        self.cached
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// NVRTC's log (warnings) from the successful compile; empty when it had nothing to say.
    pub fn log(&self) -> &str {
        &self.log
    }

    /// The target compiled for (`sm_90`, or `compute_XY` when PTX was produced).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The device the module is loaded on.
    pub fn device(&self) -> &Rc<Device> {
        &self.device
    }

    /// Looks up kernel `name` and declares its parameter kinds, checked at every launch.
    pub fn kernel(self: &Rc<Self>, name: &str, signature: Vec<ArgKind>) -> Result<Kernel> {
        let cname = CString::new(name).map_err(|_| Error::arg("name", "text without NUL bytes", "a NUL byte"))?;
        let mut func = std::ptr::null_mut();
        self.device.bind()?;
        // SAFETY: the module is loaded; writes one function handle.
        match unsafe { sys::cuModuleGetFunction(&mut func, self.raw, cname.as_ptr()) } {
            sys::CUresult::CUDA_SUCCESS => {}
            sys::CUresult::CUDA_ERROR_NOT_FOUND => {
                return Err(Error::arg(
                    "name",
                    format!("a kernel of module '{}' (declare it extern \"C\")", self.name),
                    format!("'{name}'"),
                ))
            }
            e => e.check("cuModuleGetFunction")?,
        }
        Ok(Kernel { module: self.clone(), func, name: name.into(), signature, shared_opt_in: Cell::new(0) })
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        let _ = self.device.bind();
        // Unloading may wait for the device.
        crate::stream::release_all_armed();
        // SAFETY: loaded once, unloaded once; kernels and graphs hold an Rc to the module.
        let _ = unsafe { sys::cuModuleUnload(self.raw) };
    }
}

/// A kernel function with its declared signature. Keeps its module loaded.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub(crate) module: Rc<Module>,
    pub(crate) func: sys::CUfunction,
    name: String,
    pub(crate) signature: Vec<ArgKind>,
    /// The dynamic shared memory this kernel has been allowed beyond the default 48 KiB, bytes.
    shared_opt_in: Cell<u32>,
}

impl Kernel {
    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared parameter kinds.
    pub fn signature(&self) -> &[ArgKind] {
        &self.signature
    }

    /// The module this kernel lives in.
    pub fn module(&self) -> &Rc<Module> {
        &self.module
    }

    /// The shared memory the kernel declares statically (its `__shared__` arrays), bytes; a launch's dynamic
    /// shared memory comes on top.
    pub fn static_shared_bytes(&self) -> Result<i32> {
        self.module.device.bind()?;
        let mut v = 0;
        let attr = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES;
        // SAFETY: a live function handle of a loaded module; reads one attribute into `v`.
        unsafe { sys::cuFuncGetAttribute(&mut v, attr, self.func) }.check("cuFuncGetAttribute")?;
        Ok(v)
    }

    /// Lets a launch use `bytes` of dynamic shared memory: beyond 48 KiB a kernel must opt in
    /// (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`), once per size it grows to.
    pub(crate) fn allow_shared(&self, bytes: u32) -> Result<()> {
        if bytes <= DEFAULT_SHARED_BYTES || bytes <= self.shared_opt_in.get() {
            return Ok(());
        }
        let attr = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        // SAFETY: a live function handle of a loaded module; sets one attribute.
        unsafe { sys::cuFuncSetAttribute(self.func, attr, bytes as i32) }.check("cuFuncSetAttribute")?;
        self.shared_opt_in.set(bytes);
        Ok(())
    }
}

/// Dynamic shared memory a kernel may use without opting in, bytes.
const DEFAULT_SHARED_BYTES: u32 = 48 << 10;
