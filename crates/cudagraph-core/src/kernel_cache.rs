//! An on-disk cache of NVRTC's output, so a process does not spend NVRTC's seconds on kernels an earlier
//! process compiled (the decoder's module takes about 5 s). Keyed by everything the output depends on: the
//! source text, the options, the target and NVRTC's version. An entry stores that key whole and is used
//! only when it matches byte for byte, so a file-name collision or a truncated file is a miss, never the
//! wrong kernels. Every failure to read or write is a miss too: the cache can only save time.
//!
//! `CUDAGRAPH_KERNEL_CACHE`: the directory, or `off`; default `$XDG_CACHE_HOME/cudagraph/kernels`, else
//! `$HOME/.cache/cudagraph/kernels`.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What NVRTC's output depends on, as the bytes an entry stores and is matched by.
pub struct CacheKey(Vec<u8>);

impl CacheKey {
    /// The source text, the options, the target and NVRTC's (major, minor), NUL-separated (none of them
    /// holds a NUL).
    pub fn new(source: &str, options: &[String], target: &str, nvrtc: (i32, i32)) -> CacheKey {
        let mut b = Vec::with_capacity(source.len() + 256);
        for part in [source, target, &format!("nvrtc {}.{}", nvrtc.0, nvrtc.1)].into_iter().chain(options.iter().map(String::as_str)) {
            b.extend_from_slice(part.as_bytes());
            b.push(0);
        }
        CacheKey(b)
    }
}

/// A compile's result: NVRTC's log and the image (cubin, or NUL-terminated PTX).
#[derive(Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub log: String,
    pub image: Vec<u8>,
}

const MAGIC: &[u8; 8] = b"CGKC\x01\0\0\0";

/// A cache directory.
pub struct KernelCache {
    dir: PathBuf,
}

impl KernelCache {
    /// The cache the environment names, or None when it is off or no directory is known.
    pub fn from_env() -> Option<KernelCache> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let dir = match var("CUDAGRAPH_KERNEL_CACHE") {
            Some(v) if v == "off" => return None,
            Some(v) => PathBuf::from(v),
            None => match var("XDG_CACHE_HOME") {
                Some(x) => Path::new(&x).join("cudagraph/kernels"),
                None => Path::new(&var("HOME")?).join(".cache/cudagraph/kernels"),
            },
        };
        Some(KernelCache { dir })
    }

    /// A cache in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> KernelCache {
        KernelCache { dir: dir.into() }
    }

    /// Its directory (created by the first store).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str, key: &CacheKey) -> PathBuf {
        let mut h = DefaultHasher::new();
        h.write(&key.0);
        let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(64).collect();
        self.dir.join(format!("{safe}-{:016x}.bin", h.finish()))
    }

    /// The entry stored for `key` (module `name` picks the file), if its stored key is `key` exactly.
    pub fn load(&self, name: &str, key: &CacheKey) -> Option<CacheEntry> {
        let data = fs::read(self.path(name, key)).ok()?;
        let mut r = Reader(&data);
        if r.take(MAGIC.len())? != MAGIC || r.field()? != key.0.as_slice() {
            return None;
        }
        let log = String::from_utf8(r.field()?.to_vec()).ok()?;
        let image = r.field()?.to_vec();
        r.0.is_empty().then_some(CacheEntry { log, image })
    }

    /// Stores `entry` for `key`, written to a temporary file and renamed into place, so a reader sees a
    /// whole entry or none; false when it could not (the cache is then simply not used).
    pub fn store(&self, name: &str, key: &CacheKey, entry: &CacheEntry) -> bool {
        let path = self.path(name, key);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            fs::create_dir_all(&self.dir)?;
            let mut f = fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            for field in [key.0.as_slice(), entry.log.as_bytes(), &entry.image] {
                f.write_all(&(field.len() as u64).to_le_bytes())?;
                f.write_all(field)?;
            }
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        let ok = write().is_ok();
        if !ok {
            let _ = fs::remove_file(&tmp);
        }
        ok
    }

    /// Removes the entry for `key` (one that failed to load on the device).
    pub fn remove(&self, name: &str, key: &CacheKey) {
        let _ = fs::remove_file(self.path(name, key));
    }
}

/// Reads length-prefixed fields; None past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let n = u64::from_le_bytes(self.take(8)?.try_into().ok()?);
        self.take(usize::try_from(n).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cudagraph-kcache-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn key(source: &str, options: &[String]) -> CacheKey {
        CacheKey::new(source, options, "sm_90", (12, 9))
    }

    #[test]
    fn stores_and_loads_only_the_same_key() {
        let d = dir("same");
        let c = KernelCache::at(&d);
        let opts = vec!["-DCG_BF16".to_string()];
        let e = CacheEntry { log: "warning: x".into(), image: (0..=255u8).cycle().take(100_000).collect() };
        assert_eq!(c.load("decoder-bf16", &key("src", &opts)), None);
        assert!(c.store("decoder-bf16", &key("src", &opts), &e));
        assert_eq!(c.load("decoder-bf16", &key("src", &opts)), Some(e));
        // Any part of the key different: a miss.
        assert_eq!(c.load("decoder-bf16", &key("src ", &opts)), None);
        assert_eq!(c.load("decoder-bf16", &key("src", &[])), None);
        assert_eq!(c.load("decoder-bf16", &CacheKey::new("src", &opts, "sm_80", (12, 9))), None);
        assert_eq!(c.load("decoder-bf16", &CacheKey::new("src", &opts, "sm_90", (13, 0))), None);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_holding_another_key_or_cut_short_is_a_miss() {
        let d = dir("bad");
        let c = KernelCache::at(&d);
        let (a, b) = (key("a", &[]), key("b", &[]));
        let e = CacheEntry { log: String::new(), image: vec![7; 64] };
        assert!(c.store("m", &a, &e));
        // b's file name holding a's entry (a hash collision): the stored key does not match.
        fs::copy(c.path("m", &a), c.path("m", &b)).unwrap();
        assert_eq!(c.load("m", &b), None);
        // a's file cut short, or with bytes after the image.
        let p = c.path("m", &a);
        let whole = fs::read(&p).unwrap();
        for bad in [&whole[..whole.len() - 1], &whole[..10], &[whole.as_slice(), b"x"].concat()[..]] {
            fs::write(&p, bad).unwrap();
            assert_eq!(c.load("m", &a), None);
        }
        c.remove("m", &a);
        assert!(!p.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_environment_names_the_directory_or_turns_it_off() {
        // The only test that touches these variables (Module::compile reads them only on a GPU).
        let saved: Vec<_> = ["CUDAGRAPH_KERNEL_CACHE", "XDG_CACHE_HOME", "HOME"].map(|k| (k, std::env::var_os(k))).into();
        let dir = |k: Option<&str>, x: Option<&str>, h: Option<&str>| {
            for (name, v) in [("CUDAGRAPH_KERNEL_CACHE", k), ("XDG_CACHE_HOME", x), ("HOME", h)] {
                match v {
                    Some(v) => std::env::set_var(name, v),
                    None => std::env::remove_var(name),
                }
            }
            KernelCache::from_env().map(|c| c.dir().to_path_buf())
        };
        assert_eq!(dir(Some("/k"), Some("/x"), Some("/h")), Some(PathBuf::from("/k")));
        assert_eq!(dir(Some("off"), Some("/x"), Some("/h")), None);
        assert_eq!(dir(None, Some("/x"), Some("/h")), Some(PathBuf::from("/x/cudagraph/kernels")));
        assert_eq!(dir(Some(""), Some(""), Some("/h")), Some(PathBuf::from("/h/.cache/cudagraph/kernels")));
        assert_eq!(dir(None, None, None), None);
        for (k, v) in saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }

    #[test]
    fn an_unwritable_directory_is_no_cache() {
        let d = dir("file");
        fs::write(&d, b"a file, not a directory").unwrap();
        let c = KernelCache::at(d.join("sub"));
        assert!(!c.store("m", &key("a", &[]), &CacheEntry { log: String::new(), image: vec![1] }));
        assert_eq!(c.load("m", &key("a", &[])), None);
        fs::remove_file(&d).unwrap();
    }
}
