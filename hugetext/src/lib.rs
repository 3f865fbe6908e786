//! Owns moving the running binary's machine code onto transparent huge pages at start (Linux):
//! the 2 MiB-aligned part of the executable mapping that holds this crate's code is copied into
//! anonymous memory backed by huge pages, made read-and-execute, and swapped in place by one
//! `mremap`. Touches no other memory, and knows nothing of what the code does.
//!
//! Why: the gateway's path for one review runs through tens of megabytes of machine code (TLS,
//! HTTP/2, JSON, wasmtime's call and lowering code, the gateway's own). Behind the API server,
//! with its work between two reviews, each review finds that code cold, and on 4 KiB pages each
//! page of it that the review touches is an instruction TLB miss, which a virtual machine pays twice (its
//! page walk goes through the host's tables too). On 2 MiB pages a dozen entries cover it all.
//! The cost is memory: the moved code is resident and private to the process (24-30 MiB for
//! wasmgate's text) instead of shared, evictable page cache.
//!
//! The same technique as Chromium's `hugepage_text` and Intel's iodlr large-page remapping: the
//! bytes at every address stay the same, so code running during the swap (this function's own
//! `mremap`) returns into identical instructions.

use std::fmt;

/// The size of a transparent huge page on x86-64 and aarch64 (4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// What [`move_text`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The text between `start` and `end` is now anonymous memory; `huge` bytes of it are on
    /// huge pages, as `/proc/self/smaps` counts them (the kernel may give fewer than asked,
    /// when it has no free 2 MiB blocks).
    Moved {
        /// First address moved (2 MiB-aligned).
        start: usize,
        /// One past the last address moved (2 MiB-aligned).
        end: usize,
        /// Bytes of the moved range on huge pages.
        huge: usize,
    },
    /// Nothing was changed, and why.
    Skipped(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: usize = 1 << 20;
        match self {
            Outcome::Moved { start, end, huge } => write!(
                f,
                "{} MiB of machine code moved to anonymous memory, {} MiB of it on huge pages",
                (end - start) / MIB,
                huge / MIB
            ),
            Outcome::Skipped(why) => write!(f, "machine code left on the file's pages: {why}"),
        }
    }
}

/// Moves the 2 MiB-aligned part of the executable mapping that holds this function onto
/// transparent huge pages. Call it once, at the start of `main`, before any thread is started:
/// it refuses (and changes nothing) when other threads run, when the kernel's transparent huge
/// pages are off (`never`), or when any step fails (an `execmem` policy that forbids anonymous
/// executable memory, say). A failed step leaves the original mapping in place.
pub fn move_text() -> Outcome {
    #[cfg(target_os = "linux")]
    {
        linux::move_text()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Outcome::Skipped("only Linux has transparent huge pages".into())
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{HUGE_PAGE, Outcome};
    use rustix::mm::{self, Advice, MapFlags, MprotectFlags, MremapFlags, ProtFlags};
    use std::ffi::c_void;

    pub(super) fn move_text() -> Outcome {
        match try_move() {
            Ok(outcome) => outcome,
            Err(why) => Outcome::Skipped(why),
        }
    }

    fn try_move() -> Result<Outcome, String> {
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .map_err(|e| format!("cannot read the kernel's huge page mode: {e}"))?;
        if !(mode.contains("[always]") || mode.contains("[madvise]")) {
            return Err(format!(
                "transparent huge pages are off on this node ({})",
                mode.trim()
            ));
        }
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
        let threads = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .map(str::trim)
            .unwrap_or("?");
        if threads != "1" {
            return Err(format!(
                "{threads} threads run: it is done before any starts"
            ));
        }
        let here = move_text as *const () as usize;
        let maps = std::fs::read_to_string("/proc/self/maps")
            .map_err(|e| format!("cannot read /proc/self/maps: {e}"))?;
        let (first, last) = maps
            .lines()
            .find_map(|line| executable_range(line).filter(|&(a, b)| a <= here && here < b))
            .ok_or("no executable mapping holds this code")?;
        let start = first.next_multiple_of(HUGE_PAGE);
        let end = last / HUGE_PAGE * HUGE_PAGE;
        if end <= start {
            return Err(format!(
                "the text ({} KiB) holds no aligned 2 MiB page",
                (last - first) / 1024
            ));
        }
        let len = end - start;
        // SAFETY: `start..end` lies inside a readable, executable mapping of this binary (from
        // /proc/self/maps) that nothing writes. The new memory is ours until it replaces it; what
        // replaces it holds the same bytes, made read-and-execute before the swap, and the swap
        // (`mremap` of a whole mapping) is atomic: no thread can see a page in between.
        unsafe { swap(start, len) }?;
        let huge = huge_bytes(start).unwrap_or(0);
        Ok(Outcome::Moved { start, end, huge })
    }

    /// `start..end` of a `/proc/self/maps` line if it maps a file read-and-execute, private.
    fn executable_range(line: &str) -> Option<(usize, usize)> {
        let mut fields = line.split_whitespace();
        let (a, b) = fields.next()?.split_once('-')?;
        if fields.next()? != "r-xp" {
            return None;
        }
        Some((
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        ))
    }

    /// Copies `len` bytes at `start` into fresh huge-page-backed memory and swaps it in.
    ///
    /// # Safety
    /// `start..start + len` must be 2 MiB-aligned and lie within one mapping that is readable
    /// and never written.
    unsafe fn swap(start: usize, len: usize) -> Result<(), String> {
        // One huge page more than needed, to find an aligned start inside.
        let span = len + HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping, at an address the kernel chooses.
        let raw = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                span,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .map_err(|e| format!("mmap of {} MiB: {e}", span >> 20))?;
        let raw_addr = raw as usize;
        let new = raw_addr.next_multiple_of(HUGE_PAGE);
        let unmap = |from: usize, to: usize| {
            if to > from {
                // SAFETY: part of `raw`'s mapping, which nothing else refers to.
                let _ = unsafe { mm::munmap(from as *mut c_void, to - from) };
            }
        };
        let step = || -> Result<(), String> {
            // SAFETY: `new..new + len` is inside `raw`'s mapping (`span` is one page larger).
            unsafe { mm::madvise(new as *mut c_void, len, Advice::LinuxHugepage) }
                .map_err(|e| format!("madvise(MADV_HUGEPAGE): {e}"))?;
            // SAFETY: the source is readable for `len` bytes (the caller's promise); the
            // destination is our fresh writable mapping; they do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(start as *const u8, new as *mut u8, len) };
            // SAFETY: our own mapping; from here it is never written.
            unsafe {
                mm::mprotect(
                    new as *mut c_void,
                    len,
                    MprotectFlags::READ | MprotectFlags::EXEC,
                )
            }
            .map_err(|e| {
                format!("anonymous executable memory refused: mprotect(PROT_EXEC): {e}")
            })?;
            // SAFETY: replaces `start..start + len` by pages with the same bytes and rights
            // (read, execute), atomically; our mapping at `new` ceases to exist.
            unsafe {
                mm::mremap_fixed(
                    new as *mut c_void,
                    len,
                    len,
                    MremapFlags::MAYMOVE,
                    start as *mut c_void,
                )
            }
            .map_err(|e| format!("mremap onto the text: {e}"))?;
            Ok(())
        };
        let result = step();
        if result.is_err() {
            unmap(new, new + len);
        }
        unmap(raw_addr, new);
        unmap(new + len, raw_addr + span);
        result
    }

    /// Bytes on huge pages in the mapping that starts at `start`, from `/proc/self/smaps`.
    fn huge_bytes(start: usize) -> Option<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let head = format!("{start:x}-");
        let block = &smaps[smaps.find(&head)?..];
        let line = block.lines().find(|l| l.starts_with("AnonHugePages:"))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_executable_mappings_only() {
            let text = "55d4c0a00000-55d4c2400000 r-xp 00200000 fd:01 1234 /usr/bin/wasmgate";
            assert_eq!(
                executable_range(text),
                Some((0x55d4c0a00000, 0x55d4c2400000))
            );
            let data = "55d4c2400000-55d4c2600000 rw-p 01c00000 fd:01 1234 /usr/bin/wasmgate";
            assert_eq!(executable_range(data), None);
            assert_eq!(executable_range("garbage"), None);
        }

        #[test]
        fn refuses_while_other_threads_run() {
            // A thread of ours runs during the call, however the harness runs its tests.
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let other = std::thread::spawn(move || stopped.recv());
            let outcome = move_text();
            drop(stop);
            let _ = other.join();
            assert!(
                matches!(&outcome, Outcome::Skipped(why) if why.contains("threads run") || why.contains("huge pages are off")),
                "{outcome}"
            );
        }
    }
}
