//! librdkafka linked statically into the main program (confluent-kafka-go
//! and rust-rdkafka build it so by default). `dladdr` then names the
//! executable, but glibc's `dlopen` never matches the main program by name,
//! and its librdkafka functions are exported only if it was linked with
//! `-rdynamic`. So: the functions are taken from the main program's dynamic
//! symbols when it exports them, and from its own ELF symbol table
//! (`/proc/self/exe`'s `.symtab`, plus the load bias) otherwise. Every address
//! must lie in the main program's code, so that a librdkafka.so that happens
//! to be loaded too is never mixed in.

use std::collections::HashMap;
use std::ffi::{c_int, c_void, CString};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// The main program as mapped in this process.
#[derive(Debug, Clone)]
pub struct Image {
    /// `/proc/self/exe`'s target, for messages.
    pub path: String,
    /// The load bias (0 for a non-PIE executable).
    bias: usize,
    /// `PT_LOAD` segments: (p_vaddr, p_memsz, executable).
    loads: Vec<(usize, usize, bool)>,
}

/// How [`Image::lookup`] finds a function.
#[derive(Debug)]
pub enum Lookup {
    /// `dlsym` on the main program's handle (it exports them: `-rdynamic`).
    Exported(*mut c_void, Image),
    /// Read from the executable's symbol table, already relocated.
    Table(HashMap<String, usize>),
}

impl Lookup {
    pub fn get(&self, name: &str) -> Option<*mut c_void> {
        match self {
            Lookup::Exported(handle, image) => {
                let n = CString::new(name).ok()?;
                // SAFETY: handle is dlopen(NULL)'s, never closed.
                let p = unsafe { libc::dlsym(*handle, n.as_ptr()) };
                // dlsym on the main program's handle searches its
                // dependencies too: take only the main program's own copy.
                (!p.is_null() && image.contains_code(p as usize)).then_some(p)
            }
            Lookup::Table(t) => t.get(name).map(|&a| a as *mut c_void),
        }
    }
}

unsafe extern "C" fn first_object(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: data is the &mut Option<Image> passed by of_this_process; info
    // is the loader's, valid during the call.
    let (out, info) = unsafe { (&mut *data.cast::<Option<Image>>(), &*info) };
    let mut loads = Vec::new();
    if !info.dlpi_phdr.is_null() {
        for i in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: dlpi_phdr has dlpi_phnum entries.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD {
                loads.push((
                    ph.p_vaddr as usize,
                    ph.p_memsz as usize,
                    ph.p_flags & libc::PF_X != 0,
                ));
            }
        }
    }
    *out = Some(Image {
        path: std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "/proc/self/exe".into()),
        bias: info.dlpi_addr as usize,
        loads,
    });
    // glibc reports the main program first; stop there.
    1
}

impl Image {
    /// The main program's mapping (None if the loader reports nothing).
    pub fn of_this_process() -> Option<Image> {
        let mut out: Option<Image> = None;
        // SAFETY: the callback only reads the loader's entry and writes `out`.
        unsafe { libc::dl_iterate_phdr(Some(first_object), (&raw mut out).cast()) };
        out
    }

    fn range(&self, addr: usize, code_only: bool) -> bool {
        self.loads.iter().any(|&(vaddr, memsz, x)| {
            let start = self.bias.wrapping_add(vaddr);
            (x || !code_only) && addr >= start && addr - start < memsz
        })
    }

    /// Whether `addr` lies in one of the main program's segments.
    pub fn contains(&self, addr: usize) -> bool {
        addr != 0 && self.range(addr, false)
    }

    fn contains_code(&self, addr: usize) -> bool {
        addr != 0 && self.range(addr, true)
    }

    /// How to find librdkafka's functions in the main program, and a few
    /// words saying how (for [`super::api::Api::library`]).
    pub fn lookup(&self) -> Result<(Lookup, &'static str), String> {
        // SAFETY: dlopen(NULL) returns the main program's handle.
        let handle = unsafe { libc::dlopen(std::ptr::null(), libc::RTLD_NOW) };
        if !handle.is_null() {
            let exported = Lookup::Exported(handle, self.clone());
            if exported.get("rd_kafka_version").is_some() {
                return Ok((exported, "exported symbols"));
            }
        }
        let table = self.symbol_table()?;
        if !table.contains_key("rd_kafka_version") {
            return Err(self.unusable("has no symbol table (it was stripped)"));
        }
        Ok((Lookup::Table(table), "symbol table"))
    }

    /// The error for a main program whose librdkafka cannot be called: the
    /// fix first, as apps cut librdkafka's error string short
    /// (confluent-kafka-go's `ConfigMap` at 127 bytes).
    fn unusable(&self, why: &str) -> String {
        format!(
            "kafka-e2ee plugin: link this program with -rdynamic, or do not strip it: it holds \
             librdkafka but exports none of it and {why} (Go: go build -ldflags '-extldflags \
             -rdynamic'; Rust: RUSTFLAGS='-C link-arg=-rdynamic'; program {})",
            self.path
        )
    }

    /// The defined `rd_kafka_*` functions of `/proc/self/exe`'s symbol table,
    /// relocated by the load bias. A global definition wins over local ones;
    /// a name only defined locally at two addresses is left out.
    fn symbol_table(&self) -> Result<HashMap<String, usize>, String> {
        let data = std::fs::read("/proc/self/exe")
            .map_err(|e| self.unusable(&format!("cannot be read ({e})")))?;
        let file = object::File::parse(&*data)
            .map_err(|e| self.unusable(&format!("cannot be parsed as ELF ({e})")))?;
        // The file must be the one mapped: the same PT_LOAD segments.
        let segs: Vec<(usize, usize)> = file
            .segments()
            .map(|s| (s.address() as usize, s.size() as usize))
            .collect();
        let mapped: Vec<(usize, usize)> = self.loads.iter().map(|&(a, s, _)| (a, s)).collect();
        if segs != mapped {
            return Err(self.unusable("its file does not match its mapping"));
        }
        let mut table: HashMap<String, (usize, bool, bool)> = HashMap::new();
        for sym in file.symbols() {
            if sym.kind() != SymbolKind::Text || !sym.is_definition() {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            if !name.starts_with("rd_kafka_") {
                continue;
            }
            let addr = self.bias.wrapping_add(sym.address() as usize);
            if !self.contains_code(addr) {
                continue;
            }
            let global = sym.is_global();
            match table.get_mut(name) {
                None => {
                    table.insert(name.to_owned(), (addr, global, false));
                }
                Some(e) if e.1 => {}
                Some(e) if global => *e = (addr, true, false),
                Some(e) if e.0 != addr => e.2 = true,
                Some(_) => {}
            }
        }
        Ok(table
            .into_iter()
            .filter(|(_, (_, _, ambiguous))| !ambiguous)
            .map(|(n, (a, _, _))| (n, a))
            .collect())
    }
}
