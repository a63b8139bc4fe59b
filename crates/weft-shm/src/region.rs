//! Named regions: files (by default under `/dev/shm/weft-UID`, one directory per
//! user) that several processes map, each starting with a one-page header that a
//! stranger can validate before it touches anything else.
//!
//! The directory is trusted only if this process's user owns it and nobody else
//! may write to it ([`ShmError::UntrustedDirectory`] otherwise), checked on the
//! open directory itself (`fstat` of an `O_DIRECTORY` descriptor), and files are
//! opened relative to that descriptor with `O_NOFOLLOW`: a neighbour who created
//! the directory first, or swapped a symlink in, cannot make a process map, or
//! remove, a file of their choosing.
//!
//! ```text
//! offset 0     RegionInfo (written once by the creator, before `initialized`)
//!              +0  magic "WEFTRING"      u64   +8  layout version  u32
//!              +12 ring kind             u32   +16 header length   u64 (4096)
//!              +24 total length          u64   +32 data capacity   u64
//!              +40 max payload           u64   +48 slots           u32
//!              +52 flags                 u32   +56 creator pid+start u64
//!              +64 created (wall ns)     u64   +72 liveness timeout ns u64
//! offset 128   initialized   AtomicU32   0 → 1, stored last with Release
//! offset 256   heartbeat     AtomicU64   creator's CLOCK_MONOTONIC ns
//! offset 4096  ring control block, slots, data area (see the ring modules)
//! ```

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use memmap2::{MmapOptions, MmapRaw};

use crate::error::ShmError;
use crate::liveness::{now_ns, wall_ns, ProcessId};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// "WEFTRING", little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"WEFTRING");
/// The layout version this build writes and reads.
/// 4: SPSC frames over 64 bytes 8-aligned, the producer zeroes (issue 18).
/// 5: every ring's data area starts one line past a page boundary.
/// 6: the SPSC `tail` is a lower bound stored every 4 KiB (a version-5
///    consumer in streaming mode would wait on it).
/// 7: the same for the reliable broadcast ring's `tail` (a version-6
///    consumer streams by it, and a joiner would start behind the newest).
/// 8: broadcast consumers join through a JOINING slot state (a version-7
///    producer would ignore such a slot and could overwrite its first lap).
/// 9: reliable broadcast frames have an 8-byte header, no sequence number (a
///    version-8 consumer would read the payload's first word as one).
pub const LAYOUT_VERSION: u32 = 9;
/// Bytes of the region header; the ring starts here.
pub const REGION_HEADER_LEN: usize = 4096;
const INITIALIZED_OFF: usize = 128;
const HEARTBEAT_OFF: usize = 256;

/// Which ring a region holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RingKind {
    /// One producer, one consumer.
    Spsc = 1,
    /// One producer, many consumers, each with its own cursor.
    Broadcast = 2,
    /// Many producers, one consumer.
    Mpsc = 3,
    /// Not a ring: an array of 64-bit words (weft-counters' counters file),
    /// made with [`Region::create_words`] and read through [`Words`].
    Words = 4,
    /// Many producers, many consumers, each with its own cursor.
    MpBroadcast = 5,
}

impl RingKind {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Spsc),
            2 => Some(Self::Broadcast),
            3 => Some(Self::Mpsc),
            4 => Some(Self::Words),
            5 => Some(Self::MpBroadcast),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Spsc => "spsc",
            Self::Broadcast => "broadcast",
            Self::Mpsc => "mpsc",
            Self::Words => "words",
            Self::MpBroadcast => "mp-broadcast",
        }
    }
}

/// The written-once part of a region header. `Pod`: read by copying it out.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq, Eq)]
#[repr(C)]
pub struct RegionInfo {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// A [`RingKind`] as u32.
    pub kind: u32,
    /// [`REGION_HEADER_LEN`].
    pub header_len: u64,
    /// Bytes of the whole file.
    pub total_len: u64,
    /// Bytes of the ring's data area (a power of two).
    pub capacity: u64,
    /// Largest payload one frame may carry.
    pub max_payload: u64,
    /// Consumer slots (broadcast) or producer slots (MPSC); 0 for SPSC.
    pub slots: u32,
    /// Ring-specific flags (broadcast: bit 0 = overwrite mode).
    pub flags: u32,
    /// The creator, a [`ProcessId`] word.
    pub creator: u64,
    /// When it was created, ns since the Unix epoch.
    pub created_wall_ns: u64,
    /// Heartbeats older than this mean the writer is gone, in ns.
    pub liveness_timeout_ns: u64,
}

/// The default directory of region files: `$WEFT_DIR` if set, else
/// `/dev/shm/weft-UID` for this process's effective user id (as Aeron uses
/// `aeron-USER`), so users never share a directory by accident.
pub fn default_dir() -> PathBuf {
    std::env::var_os("WEFT_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/dev/shm/weft-{}", nix::unistd::geteuid())))
}

/// How regions are created and where they live.
#[derive(Clone, Debug)]
pub struct ShmOptions {
    /// Directory of region files. Default: [`default_dir`] (`$WEFT_DIR`, else
    /// `/dev/shm/weft-UID`). It must be owned by this process's user (or by
    /// [`trust_dir_owner`](Self::trust_dir_owner)) and writable by nobody else;
    /// a missing one is created with mode 0700.
    pub dir: PathBuf,
    /// Another user whose directory is trusted as well (for processes of
    /// several users sharing rings that one service user creates, with a
    /// wider [`mode`](Self::mode)). Default none. The directory must still not
    /// be writable by its group or others.
    pub trust_dir_owner: Option<u32>,
    /// File mode of created regions. Default 0o600 (owner only).
    pub mode: u32,
    /// Touch every page at create so no page fault lands on the hot path. Default on.
    pub prefault: bool,
    /// `mlock` the mapping (create and attach). Default off; fails with a message
    /// naming RLIMIT_MEMLOCK if the limit is too small.
    pub mlock: bool,
    /// Ask for transparent huge pages (`madvise(MADV_HUGEPAGE)`). Default off. Takes
    /// effect only where `/sys/kernel/mm/transparent_hugepage/shmem_enabled` allows
    /// it (`advise`, `within_size` or `always`); otherwise regions use 4 KiB pages
    /// and [`Region::huge_pages`] says so.
    pub huge_pages: bool,
    /// The creator deletes the file when its handle drops. Default on: files
    /// outlive a crash only (and [`Region::reclaim`] removes those).
    pub remove_on_drop: bool,
    /// A peer whose heartbeat is older than this counts as gone; also the time a
    /// blocked producer waits before evicting a consumer that makes no progress.
    /// Default 1 s.
    pub liveness_timeout: Duration,
}

impl Default for ShmOptions {
    fn default() -> Self {
        Self {
            dir: default_dir(),
            trust_dir_owner: None,
            mode: 0o600,
            prefault: true,
            mlock: false,
            huge_pages: false,
            remove_on_drop: true,
            liveness_timeout: Duration::from_secs(1),
        }
    }
}

impl ShmOptions {
    /// The defaults with another directory.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ..Self::default()
        }
    }

    /// The file of region `name`, after checking the name: 1 to 200 characters of
    /// `[A-Za-z0-9._-]`, not starting with a dot.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, ShmError> {
        let ok = !name.is_empty()
            && name.len() <= 200
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(ShmError::InvalidConfig(format!(
                "region name {name:?}: expected 1 to 200 characters of A-Z a-z 0-9 . _ -, not starting with '.'"
            )));
        }
        Ok(self.dir.join(name))
    }
}

/// What a region's creator is doing, as far as another process can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreatorState {
    /// Its process runs and its heartbeat (if it sends one) is fresh.
    Alive,
    /// Its process is gone (exited or crashed, or the pid was recycled).
    Dead,
    /// Its process exists but has not heartbeated within the liveness timeout.
    Stale,
}

/// A mapped region. Dropping it unmaps; the creator's handle also deletes the file
/// when [`ShmOptions::remove_on_drop`] is set.
#[derive(Debug)]
pub struct Region {
    path: PathBuf,
    /// The mapping's entry in the SIGBUS registry (dropped before `map`).
    guard: crate::sigbus::Guard,
    map: MmapRaw,
    info: RegionInfo,
    /// The creator's handle with [`ShmOptions::remove_on_drop`]: the
    /// directory (open) and the file name to remove from it on drop.
    remove_on_drop: Option<(TrustedDir, String)>,
    /// [`Region::keep_file`] was called: the file outlives the handle.
    keep: std::sync::atomic::AtomicBool,
    /// With `remove_on_drop`: the file is also removed if the process is
    /// terminated by SIGTERM or SIGINT (see [`crate::terminate`]).
    exit_guard: Option<crate::terminate::FileGuard>,
    huge_pages: bool,
}

/// What a ring asks of [`Region::create`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct RegionSpec {
    pub(crate) kind: RingKind,
    pub(crate) capacity: usize,
    pub(crate) max_payload: usize,
    pub(crate) slots: u32,
    pub(crate) flags: u32,
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> ShmError {
    match source.kind() {
        ErrorKind::NotFound => ShmError::NotFound {
            path: path.to_owned(),
        },
        ErrorKind::PermissionDenied => ShmError::PermissionDenied {
            path: path.to_owned(),
        },
        ErrorKind::AlreadyExists => ShmError::AlreadyExists {
            path: path.to_owned(),
        },
        _ => ShmError::Io {
            op,
            path: path.to_owned(),
            source,
        },
    }
}

/// A weft directory, open, and checked to be one this process may trust:
/// owned by its effective user (or [`ShmOptions::trust_dir_owner`]) and not
/// writable by group or others. The checks are made on the open descriptor,
/// and files are opened relative to it, so the directory cannot be swapped
/// between the check and the use.
#[derive(Debug)]
struct TrustedDir {
    fd: OwnedFd,
}

impl TrustedDir {
    /// Opens `opts.dir` (creating it, mode 0700, if `create` and missing) and
    /// checks it.
    fn open(opts: &ShmOptions, create: bool) -> Result<Self, ShmError> {
        use nix::fcntl::OFlag;
        let dir = &opts.dir;
        if dir.as_os_str().is_empty() {
            return Err(ShmError::InvalidConfig(
                "the weft directory is empty: give a path, or leave it unset for the default"
                    .into(),
            ));
        }
        if create && !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_err("create directory", dir, e))?;
        }
        let fd = nix::fcntl::open(
            dir.as_path(),
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| match e {
            nix::errno::Errno::ENOTDIR => ShmError::UntrustedDirectory {
                path: dir.clone(),
                why: "it is not a directory".into(),
            },
            e => io_err("open directory", dir, e.into()),
        })?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| io_err("stat directory", dir, e.into()))?;
        let me = nix::unistd::geteuid().as_raw();
        if st.st_uid != me && Some(st.st_uid) != opts.trust_dir_owner {
            return Err(ShmError::UntrustedDirectory {
                path: dir.clone(),
                why: format!(
                    "it is owned by uid {}, not by this process's user (uid {me}); another user may \
                     have created it first: remove it, or use a directory of your own (WEFT_DIR)",
                    st.st_uid
                ),
            });
        }
        if st.st_mode & 0o022 != 0 {
            return Err(ShmError::UntrustedDirectory {
                path: dir.clone(),
                why: format!(
                    "its mode {:o} lets other users add, replace or remove files: chmod go-w it",
                    st.st_mode & 0o7777
                ),
            });
        }
        Ok(Self { fd })
    }

    /// Opens file `name` in the directory, never through a symbolic link.
    /// `create`: exclusively, with `mode`.
    fn open_file(&self, path: &Path, name: &str, create: Option<u32>) -> Result<File, ShmError> {
        use nix::fcntl::OFlag;
        let mut flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let mode = match create {
            Some(m) => {
                flags |= OFlag::O_CREAT | OFlag::O_EXCL;
                nix::sys::stat::Mode::from_bits_truncate(m)
            }
            None => nix::sys::stat::Mode::empty(),
        };
        let fd = nix::fcntl::openat(&self.fd, name, flags, mode).map_err(|e| match e {
            nix::errno::Errno::ELOOP => ShmError::NotARegularFile {
                path: path.to_owned(),
                found: "a symbolic link",
            },
            nix::errno::Errno::EISDIR => ShmError::NotARegularFile {
                path: path.to_owned(),
                found: "a directory",
            },
            e => io_err(
                if create.is_some() { "create" } else { "open" },
                path,
                e.into(),
            ),
        })?;
        let file = File::from(fd);
        check_regular(&file, path)?;
        Ok(file)
    }

    /// Removes file `name` from the directory (never the target of a link).
    fn remove(&self, path: &Path, name: &str) -> Result<(), ShmError> {
        nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| io_err("remove", path, e.into()))
    }
}

/// Refuses anything but a regular file (a FIFO, device or directory opened
/// by name where a region was expected).
fn check_regular(file: &File, path: &Path) -> Result<(), ShmError> {
    let kind = file
        .metadata()
        .map_err(|e| io_err("stat", path, e))?
        .file_type();
    if kind.is_file() {
        return Ok(());
    }
    use std::os::unix::fs::FileTypeExt;
    let found = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(ShmError::NotARegularFile {
        path: path.to_owned(),
        found,
    })
}

impl Region {
    /// Creates region `name` exclusively, sized and prefaulted per `spec`. The
    /// header is complete but not yet marked initialized: the ring sets up its
    /// control block, then calls [`Region::mark_initialized`].
    pub(crate) fn create(
        opts: &ShmOptions,
        name: &str,
        spec: RegionSpec,
        total_len: usize,
    ) -> Result<Self, ShmError> {
        let path = opts.path_of(name)?;
        let dir = TrustedDir::open(opts, true)?;
        let file = dir.open_file(&path, name, Some(opts.mode))?;
        // From here on a failure must not leave a half-made file behind.
        match Self::lay_out(opts, &path, &file, spec, total_len) {
            Ok(mut region) => {
                if opts.remove_on_drop {
                    use std::os::fd::AsRawFd;
                    region.exit_guard =
                        Some(crate::terminate::remove_on_exit(dir.fd.as_raw_fd(), name));
                    region.remove_on_drop = Some((dir, name.to_owned()));
                }
                Ok(region)
            }
            Err(e) => {
                let _ = dir.remove(&path, name);
                Err(e)
            }
        }
    }

    fn lay_out(
        opts: &ShmOptions,
        path: &Path,
        file: &File,
        spec: RegionSpec,
        total_len: usize,
    ) -> Result<Self, ShmError> {
        // The umask may have narrowed the mode; set exactly what was asked.
        file.set_permissions(std::fs::Permissions::from_mode(opts.mode))
            .map_err(|e| io_err("chmod", path, e))?;
        file.set_len(total_len as u64)
            .map_err(|e| io_err("size", path, e))?;
        let mut mo = MmapOptions::new();
        mo.len(total_len);
        if opts.prefault {
            mo.populate();
        }
        let map = mo.map_raw(file).map_err(|e| io_err("map", path, e))?;
        let huge_pages = opts.huge_pages && thp_shmem_allows_advise() && advise_huge(&map);
        if opts.prefault {
            // MAP_POPULATE may map the pages read-only until first write; a write per
            // page allocates each tmpfs page now rather than on the hot path.
            let base = map.as_mut_ptr();
            for off in (0..total_len).step_by(4096) {
                // SAFETY: `off` < total_len, inside the fresh mapping nobody else
                // has opened yet (it is not initialised); the byte is already zero.
                unsafe { base.add(off).write_volatile(0) };
            }
        }
        let info = RegionInfo {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            kind: spec.kind as u32,
            header_len: REGION_HEADER_LEN as u64,
            total_len: total_len as u64,
            capacity: spec.capacity as u64,
            max_payload: spec.max_payload as u64,
            slots: spec.slots,
            flags: spec.flags,
            creator: ProcessId::current().to_word(),
            created_wall_ns: wall_ns(),
            liveness_timeout_ns: opts.liveness_timeout.as_nanos() as u64,
        };
        // SAFETY: the mapping is at least one header long and page-aligned; nobody
        // reads the info before `initialized` is set.
        unsafe { (map.as_mut_ptr() as *mut RegionInfo).write(info) };
        let region = Self {
            path: path.to_owned(),
            guard: crate::sigbus::register(map.as_mut_ptr(), total_len),
            map,
            info,
            remove_on_drop: None,
            keep: false.into(),
            exit_guard: None,
            huge_pages,
        };
        region.heartbeat();
        if opts.mlock {
            region.lock()?;
        }
        Ok(region)
    }

    /// Publishes the region: every later attach may use it.
    pub(crate) fn mark_initialized(&self) {
        // SYNC POINT: pairs with the Acquire load in `attach`, so an attacher sees the
        // header and the ring's initial control block.
        self.initialized().store(1, Ordering::Release);
    }

    /// Maps an existing region holding a ring of `kind`, after validating its file
    /// size and header. Every failure is a typed [`ShmError`]; nothing past the
    /// header is read from a file that fails a check.
    pub(crate) fn attach(opts: &ShmOptions, name: &str, kind: RingKind) -> Result<Self, ShmError> {
        let path = opts.path_of(name)?;
        let file = TrustedDir::open(opts, false)?.open_file(&path, name, None)?;
        let region = Self::validate(file, &path)?;
        let found = RingKind::from_u32(region.info.kind).expect("validated");
        if found != kind {
            return Err(ShmError::WrongKind {
                path,
                found: found.name(),
                expected: kind.name(),
            });
        }
        if opts.mlock {
            region.lock()?;
        }
        Ok(region)
    }

    /// Opens and validates any region file, for tools that inspect regions.
    /// Never follows a symbolic link and refuses anything but a regular file;
    /// unlike `Region::attach`, it does not check who owns the directory
    /// (a tool may read another user's regions it has permission for).
    pub fn open(path: &Path) -> Result<Self, ShmError> {
        Self::open_validated(path)
    }

    /// Creates region `name` of kind [`RingKind::Words`]: `len` bytes (a power
    /// of two, at least 1024) of zeroed 64-bit words after the header. `init`
    /// writes the initial words; only then can other processes attach. The
    /// creator's liveness is the region's ([`Region::creator_state`],
    /// [`Region::heartbeat`]).
    pub fn create_words(
        opts: &ShmOptions,
        name: &str,
        len: usize,
        init: impl FnOnce(&Words),
    ) -> Result<Words, ShmError> {
        if !len.is_power_of_two() || len < 1024 {
            return Err(ShmError::InvalidConfig(format!(
                "word region of {len} bytes: expected a power of two of at least 1024"
            )));
        }
        let spec = RegionSpec {
            kind: RingKind::Words,
            capacity: len,
            max_payload: 8,
            slots: 0,
            flags: 0,
        };
        let region = Self::create(opts, name, spec, REGION_HEADER_LEN + len)?;
        let words = Words::new(region)?;
        init(&words);
        if let Some(r) = &words.region {
            r.mark_initialized();
        }
        Ok(words)
    }

    /// Attaches to region `name` of kind [`RingKind::Words`].
    pub fn attach_words(opts: &ShmOptions, name: &str) -> Result<Words, ShmError> {
        Words::new(Self::attach(opts, name, RingKind::Words)?)
    }

    fn open_validated(path: &Path) -> Result<Self, ShmError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(nix::libc::ELOOP) => ShmError::NotARegularFile {
                    path: path.to_owned(),
                    found: "a symbolic link",
                },
                Some(nix::libc::EISDIR) => ShmError::NotARegularFile {
                    path: path.to_owned(),
                    found: "a directory",
                },
                _ => io_err("open", path, e),
            })?;
        check_regular(&file, path)?;
        Self::validate(file, path)
    }

    /// Validates an open region file: size, header, initialisation.
    fn validate(file: File, path: &Path) -> Result<Self, ShmError> {
        let len = file.metadata().map_err(|e| io_err("stat", path, e))?.len();
        if len < REGION_HEADER_LEN as u64 {
            return Err(ShmError::Truncated {
                path: path.to_owned(),
                len,
                expected: REGION_HEADER_LEN as u64,
            });
        }
        // Map exactly the file's length: nothing beyond it is ever touched, so a
        // short file cannot raise SIGBUS.
        let map = MmapOptions::new()
            .len(len as usize)
            .map_raw(&file)
            .map_err(|e| io_err("map", path, e))?;
        // SAFETY: the mapping is at least one header long and page-aligned;
        // `RegionInfo` is `Pod`, so any bytes are a valid value to copy out.
        let info: RegionInfo = unsafe { (map.as_ptr() as *const RegionInfo).read() };
        let corrupt = |what: String| ShmError::Corrupt {
            path: path.to_owned(),
            what,
        };
        if info.magic == 0 {
            // Created, not yet written: the creator is between `create` and its header.
            return Err(ShmError::NotInitialized {
                path: path.to_owned(),
                creator_pid: 0,
            });
        }
        if info.magic != MAGIC {
            return Err(ShmError::NotWeft {
                path: path.to_owned(),
                found: info.magic,
            });
        }
        if info.layout_version != LAYOUT_VERSION {
            return Err(ShmError::VersionMismatch {
                path: path.to_owned(),
                found: info.layout_version,
                expected: LAYOUT_VERSION,
            });
        }
        let mut region = Self {
            path: path.to_owned(),
            guard: crate::sigbus::register(map.as_mut_ptr(), len as usize),
            map,
            info,
            remove_on_drop: None,
            keep: false.into(),
            exit_guard: None,
            huge_pages: false,
        };
        // SYNC POINT: pairs with the Release store in `mark_initialized`.
        if region.initialized().load(Ordering::Acquire) != 1 {
            let creator_pid = ProcessId::from_word(info.creator).map_or(0, |p| p.pid);
            return Err(ShmError::NotInitialized {
                path: path.to_owned(),
                creator_pid,
            });
        }
        // Re-read now that `initialized` is acquired.
        // SAFETY: as above.
        let info: RegionInfo = unsafe { (region.map.as_ptr() as *const RegionInfo).read() };
        if info.total_len > len {
            return Err(ShmError::Truncated {
                path: path.to_owned(),
                len,
                expected: info.total_len,
            });
        }
        if info.total_len != len {
            return Err(corrupt(format!(
                "file is {len} bytes, header says {}",
                info.total_len
            )));
        }
        if info.header_len != REGION_HEADER_LEN as u64 {
            return Err(corrupt(format!("header length {}", info.header_len)));
        }
        if RingKind::from_u32(info.kind).is_none() {
            return Err(corrupt(format!("unknown ring kind {}", info.kind)));
        }
        if !info.capacity.is_power_of_two() || info.capacity < 64 || info.capacity > len {
            return Err(corrupt(format!(
                "data capacity {} is not a power of two within the file",
                info.capacity
            )));
        }
        if info.max_payload == 0 || info.max_payload >= info.capacity {
            return Err(corrupt(format!(
                "max payload {} for capacity {}",
                info.max_payload, info.capacity
            )));
        }
        region.info = info;
        Ok(region)
    }

    /// Deletes region `name`'s file. Processes that have it mapped keep their
    /// mapping; new attaches fail with `NotFound`.
    pub fn remove(opts: &ShmOptions, name: &str) -> Result<(), ShmError> {
        let path = opts.path_of(name)?;
        TrustedDir::open(opts, false)?.remove(&path, name)
    }

    /// Deletes region `name` if its creator is dead or stale (see
    /// [`Region::creator_state`]), including a region whose creator died before
    /// initialising it. Refuses with [`ShmError::OwnerAlive`] otherwise, and never
    /// deletes a file that is not a weft region.
    pub fn reclaim(opts: &ShmOptions, name: &str) -> Result<(), ShmError> {
        let path = opts.path_of(name)?;
        let dir = TrustedDir::open(opts, false)?;
        match dir
            .open_file(&path, name, None)
            .and_then(|f| Self::validate(f, &path))
        {
            Ok(region) => {
                if region.creator_state() == CreatorState::Alive {
                    let pid = ProcessId::from_word(region.info.creator).map_or(0, |p| p.pid);
                    return Err(ShmError::OwnerAlive { path, pid });
                }
            }
            Err(ShmError::VersionMismatch { .. }) => {
                // Left by another weft build (an upgrade, a rollback): its
                // header's first words keep their places across layout
                // versions, so its creator can be judged, and a dead one's
                // file goes like any stale one. Without this a process that
                // inherits the pid of an old build's crashed process could
                // not create its own counters file (`counters.PID.N`).
                let creator = Self::creator_word(&dir, &path, name)?;
                if let Some(p) = ProcessId::from_word(creator).filter(|p| p.is_alive()) {
                    return Err(ShmError::OwnerAlive { path, pid: p.pid });
                }
            }
            Err(ShmError::NotInitialized { creator_pid, .. }) => {
                // Only the creator writes an uninitialised region; if it still runs,
                // it may be about to finish.
                if creator_pid != 0
                    && (ProcessId {
                        pid: creator_pid,
                        start: 0,
                    })
                    .is_alive()
                {
                    return Err(ShmError::OwnerAlive {
                        path,
                        pid: creator_pid,
                    });
                }
            }
            Err(e) => return Err(e),
        }
        dir.remove(&path, name)
    }

    /// The creator word of the region file `name`, read from its header
    /// without validating the rest (for a file of another layout version).
    fn creator_word(dir: &TrustedDir, path: &Path, name: &str) -> Result<u64, ShmError> {
        use std::os::unix::fs::FileExt;
        let file = dir.open_file(path, name, None)?;
        let mut info = [0u8; std::mem::size_of::<RegionInfo>()];
        file.read_exact_at(&mut info, 0)
            .map_err(|e| io_err("read", path, e))?;
        Ok(bytemuck::pod_read_unaligned::<RegionInfo>(&info).creator)
    }

    /// The creator's handle keeps its file when dropped (and when the
    /// process is terminated by a signal), though it was created with
    /// [`ShmOptions::remove_on_drop`]: for a file that is to outlive its
    /// process for a while, such as a closed counters file lingering for
    /// the tools.
    pub fn keep_file(&self) {
        self.keep.store(true, std::sync::atomic::Ordering::Release);
        if let Some(g) = &self.exit_guard {
            g.disarm();
        }
    }

    /// The creator's handle keeps its file if the process is terminated
    /// by SIGTERM or SIGINT (it is still removed when dropped): for a file
    /// whose own state says how the process ended, such as a counters file
    /// the signal handler marks closed.
    pub fn keep_file_on_signal(&self) {
        if let Some(g) = &self.exit_guard {
            g.disarm();
        }
    }

    /// Whether the file was truncated under the mapping (someone shrank it
    /// while it was in use): what lay past its new end reads as zeros and
    /// writes there go nowhere; the ring is unusable. One atomic load. See
    /// the `sigbus` module: without it, the access would have killed the
    /// process.
    pub fn truncated(&self) -> bool {
        self.guard.truncated()
    }

    /// The header fields.
    pub fn info(&self) -> &RegionInfo {
        &self.info
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether huge pages were requested and the kernel allows them for shared
    /// memory (the kernel may still back some pages with 4 KiB pages).
    pub fn huge_pages(&self) -> bool {
        self.huge_pages
    }

    /// Records "the creator is alive now" in the header (one clock read, one store).
    pub fn heartbeat(&self) {
        self.heartbeat_word().store(now_ns(), Ordering::Release);
    }

    /// The creator's last heartbeat (CLOCK_MONOTONIC ns); `None` if none yet.
    pub fn heartbeat_ns(&self) -> Option<u64> {
        match self.heartbeat_word().load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// Whether the creator is alive, dead, or alive but silent for longer than the
    /// liveness timeout. Costs a `kill(pid, 0)` and a read of `/proc/<pid>/stat`.
    pub fn creator_state(&self) -> CreatorState {
        let alive = ProcessId::from_word(self.info.creator).is_some_and(ProcessId::is_alive);
        if !alive {
            return CreatorState::Dead;
        }
        let beat = self.heartbeat_word().load(Ordering::Acquire);
        if now_ns().saturating_sub(beat) > self.info.liveness_timeout_ns {
            CreatorState::Stale
        } else {
            CreatorState::Alive
        }
    }

    /// Start of the mapping (page-aligned, `info().total_len` bytes).
    pub(crate) fn base(&self) -> NonNull<u8> {
        NonNull::new(self.map.as_mut_ptr()).expect("mmap never returns null")
    }

    fn initialized(&self) -> &AtomicU32 {
        // SAFETY: inside the header page of a live, page-aligned mapping; aligned;
        // zero is a valid AtomicU32.
        unsafe { &*(self.map.as_ptr().add(INITIALIZED_OFF) as *const AtomicU32) }
    }

    fn heartbeat_word(&self) -> &AtomicU64 {
        // SAFETY: as for `initialized`.
        unsafe { &*(self.map.as_ptr().add(HEARTBEAT_OFF) as *const AtomicU64) }
    }

    fn lock(&self) -> Result<(), ShmError> {
        self.map.lock().map_err(|source| {
            let limit =
                match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK) {
                    Ok((soft, _)) if soft == nix::sys::resource::RLIM_INFINITY => {
                        "unlimited".to_string()
                    }
                    Ok((soft, _)) => format!("{soft} bytes"),
                    Err(e) => format!("unknown ({e})"),
                };
            ShmError::Mlock {
                path: self.path.clone(),
                len: self.map.len(),
                limit,
                source,
            }
        })
    }
}

/// A region of kind [`RingKind::Words`] seen as an array of `AtomicU64`: the
/// safe view a counters file is built on. Cheap to clone (it shares the
/// mapping), `Send` and `Sync`. Every access is bounds-checked against the
/// validated header, so a corrupt file can give wrong numbers, never a fault.
/// [`Words::private`] makes the same over private memory (no file).
#[derive(Clone, Debug)]
pub struct Words {
    region: Option<std::sync::Arc<Region>>,
    /// Keeps private memory alive.
    _private: Option<std::sync::Arc<[AtomicU64]>>,
    base: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: `base` points into memory that `region` or `private` keeps alive,
// and only atomics are handed out from it.
unsafe impl Send for Words {}
// SAFETY: as above: shared access is through atomics only.
unsafe impl Sync for Words {}

impl Words {
    fn new(region: Region) -> Result<Self, ShmError> {
        let info = *region.info();
        if info.kind != RingKind::Words as u32
            || info.total_len != REGION_HEADER_LEN as u64 + info.capacity
        {
            return Err(ShmError::Corrupt {
                path: region.path().to_owned(),
                what: format!(
                    "word region of {} bytes in a file of {}",
                    info.capacity, info.total_len
                ),
            });
        }
        // SAFETY: the header is REGION_HEADER_LEN (4096) bytes of a page-aligned
        // mapping of `total_len` bytes, so the word area starts 8-aligned, in bounds.
        let base = unsafe { region.base().add(REGION_HEADER_LEN) }.cast::<AtomicU64>();
        Ok(Self {
            len: info.capacity as usize / 8,
            region: Some(std::sync::Arc::new(region)),
            _private: None,
            base,
        })
    }

    /// `len` zeroed words in this process's heap, for counters nobody else
    /// reads (no file).
    pub fn private(len: usize) -> Self {
        let words: std::sync::Arc<[AtomicU64]> =
            (0..len.max(1)).map(|_| AtomicU64::new(0)).collect();
        let base = NonNull::from(&words[0]);
        Self {
            region: None,
            _private: Some(words),
            base,
            len,
        }
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Word `i`; `None` past the end.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&AtomicU64> {
        // SAFETY: `i < len` keeps the word inside the memory that `self` keeps
        // alive for as long as the returned reference (tied to `&self`); any
        // bit pattern is a valid AtomicU64.
        (i < self.len).then(|| unsafe { &*self.base.as_ptr().add(i) })
    }

    /// Word `i` as an owned handle that keeps the memory alive: for a word
    /// written on a hot path, where [`get`](Self::get)'s bounds check and
    /// pointer chase would cost on every access. `None` past the end.
    pub fn word(&self, i: usize) -> Option<WordRef> {
        (i < self.len).then(|| WordRef {
            // SAFETY: `i < len`: inside the memory `_keep` keeps alive.
            ptr: unsafe { NonNull::new_unchecked(self.base.as_ptr().add(i)) },
            _keep: self.clone(),
        })
    }

    /// The region (path, header, creator liveness, heartbeat); `None` for
    /// private words.
    pub fn region(&self) -> Option<&Region> {
        self.region.as_deref()
    }
}

/// One word of a [`Words`], owned: dereferences to its `AtomicU64` with one
/// load of the pointer it holds. `Send` and `Sync`; a clone is another
/// handle on the same word.
#[derive(Clone, Debug)]
pub struct WordRef {
    ptr: NonNull<AtomicU64>,
    _keep: Words,
}

// SAFETY: the pointer is into memory `_keep` keeps alive; access is atomic.
unsafe impl Send for WordRef {}
// SAFETY: as above.
unsafe impl Sync for WordRef {}

impl std::ops::Deref for WordRef {
    type Target = AtomicU64;

    #[inline(always)]
    fn deref(&self) -> &AtomicU64 {
        // SAFETY: `ptr` was in bounds when made and `_keep` keeps the memory
        // mapped for as long as `self` lives; any bit pattern is a valid AtomicU64.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(g) = &self.exit_guard {
            g.disarm();
        }
        if self.keep.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Some((dir, name)) = &self.remove_on_drop {
            let _ = dir.remove(&self.path, name);
        }
    }
}

fn thp_shmem_allows_advise() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .map(|s| {
            ["[advise]", "[within_size]", "[always]", "[force]"]
                .iter()
                .any(|m| s.contains(m))
        })
        .unwrap_or(false)
}

fn advise_huge(map: &MmapRaw) -> bool {
    map.advise(memmap2::Advice::HugePage).is_ok()
}

/// Maps the ring inside `region`: control block `C`, the region's slots of `S`, and
/// its data area, after checking the header's sizes agree with this layout.
pub(crate) fn ring_mem<C, S>(region: Region) -> Result<crate::mem::RingMem<C, S>, ShmError> {
    let info = *region.info();
    let layout = crate::mem::RingLayout::new::<C, S>(
        REGION_HEADER_LEN,
        info.slots as usize,
        info.capacity as usize,
    );
    if layout.total as u64 != info.total_len {
        return Err(ShmError::Corrupt {
            path: region.path().to_owned(),
            what: format!(
                "total length {} does not match a ring of capacity {} with {} slots ({})",
                info.total_len, info.capacity, info.slots, layout.total
            ),
        });
    }
    let base = region.base();
    // SAFETY: the mapping is `total_len` bytes of page-aligned shared memory, which
    // equals the layout's total; the region (moved into the keep-alive) owns it.
    Ok(unsafe { crate::mem::RingMem::from_raw(base, layout, std::sync::Arc::new(region)) })
}

/// Creates region `name` for a ring with control `C` and `spec.slots` of `S`, maps
/// it, lets `init` set up the control block (take the creator's role), and only
/// then publishes the region to attachers.
pub(crate) fn create_ring<C, S>(
    opts: &ShmOptions,
    name: &str,
    spec: RegionSpec,
    init: impl FnOnce(&crate::mem::RingMem<C, S>),
) -> Result<crate::mem::RingMem<C, S>, ShmError> {
    let layout =
        crate::mem::RingLayout::new::<C, S>(REGION_HEADER_LEN, spec.slots as usize, spec.capacity);
    let region = Region::create(opts, name, spec, layout.total)?;
    let mem = ring_mem::<C, S>(region)?;
    init(&mem);
    mem.keep_alive()
        .downcast_ref::<Region>()
        .expect("a mapped ring is kept alive by its region")
        .mark_initialized();
    Ok(mem)
}

/// Attaches to region `name` holding a ring of `kind`: its memory, its header
/// fields, and its path (for error messages).
pub(crate) fn attach_ring<C, S>(
    opts: &ShmOptions,
    name: &str,
    kind: RingKind,
) -> Result<(crate::mem::RingMem<C, S>, RegionInfo, PathBuf), ShmError> {
    let region = Region::attach(opts, name, kind)?;
    let (info, path) = (*region.info(), region.path().to_owned());
    Ok((ring_mem(region)?, info, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spsc::{Consumer, Producer, SpscConfig};
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Self {
            let p = PathBuf::from(format!("/dev/shm/weft-unit-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Self(p)
        }
        fn opts(&self) -> ShmOptions {
            ShmOptions {
                remove_on_drop: false,
                ..ShmOptions::in_dir(&self.0)
            }
        }
        /// A valid SPSC region named `r`, left on disk.
        fn region(&self) -> PathBuf {
            drop(Producer::create(&self.opts(), "r", &SpscConfig::new(4096)).unwrap());
            self.0.join("r")
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn patch(path: &Path, at: u64, bytes: &[u8]) {
        let mut f = OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(bytes).unwrap();
    }

    fn attach(d: &Dir) -> ShmError {
        Consumer::attach(&d.opts(), "r").unwrap_err()
    }

    #[test]
    fn created_exclusively_with_mode_0600_and_removed_on_drop() {
        let d = Dir::new("create");
        let opts = ShmOptions::in_dir(&d.0);
        let p = Producer::create(&opts, "r", &SpscConfig::new(4096)).unwrap();
        let meta = std::fs::metadata(d.0.join("r")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            meta.len() as usize,
            p.region().unwrap().info().total_len as usize
        );
        assert!(matches!(
            Producer::create(&opts, "r", &SpscConfig::new(4096)),
            Err(ShmError::AlreadyExists { .. })
        ));
        drop(p);
        assert!(
            !d.0.join("r").exists(),
            "the creator removes its file on drop"
        );
    }

    #[test]
    fn names_and_sizes_are_checked() {
        let d = Dir::new("names");
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(201)] {
            let e = Producer::create(&d.opts(), bad, &SpscConfig::new(4096)).unwrap_err();
            assert!(matches!(e, ShmError::InvalidConfig(_)), "{bad:?}: {e}");
        }
        for cap in [0, 1000, 512] {
            assert!(matches!(
                Producer::create(&d.opts(), "r", &SpscConfig::new(cap)),
                Err(ShmError::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn missing_empty_short_and_foreign_files_are_typed_errors() {
        let d = Dir::new("foreign");
        std::fs::create_dir_all(&d.0).unwrap();
        assert!(matches!(attach(&d), ShmError::NotFound { .. }));
        std::fs::write(d.0.join("r"), b"").unwrap();
        assert!(matches!(attach(&d), ShmError::Truncated { len: 0, .. }));
        std::fs::write(d.0.join("r"), [1u8; 100]).unwrap();
        assert!(matches!(attach(&d), ShmError::Truncated { len: 100, .. }));
        std::fs::write(d.0.join("r"), vec![0xAB; 8192]).unwrap();
        assert!(matches!(
            attach(&d),
            ShmError::NotWeft {
                found: 0xABAB_ABAB_ABAB_ABAB,
                ..
            }
        ));
        std::fs::write(d.0.join("r"), vec![0; 8192]).unwrap();
        assert!(
            matches!(attach(&d), ShmError::NotInitialized { creator_pid: 0, .. }),
            "all zeros: created, header not yet written"
        );
    }

    #[test]
    fn version_initialization_and_size_are_checked() {
        let d = Dir::new("version");
        let path = d.region();
        assert!(Consumer::attach(&d.opts(), "r").is_ok());

        patch(&path, 8, &(LAYOUT_VERSION + 1).to_le_bytes());
        assert!(matches!(
            attach(&d),
            ShmError::VersionMismatch { found, expected, .. }
                if found == LAYOUT_VERSION + 1 && expected == LAYOUT_VERSION
        ));
        patch(&path, 8, &LAYOUT_VERSION.to_le_bytes());

        patch(&path, INITIALIZED_OFF as u64, &0u32.to_le_bytes());
        assert!(
            matches!(attach(&d), ShmError::NotInitialized { creator_pid, .. } if creator_pid == std::process::id())
        );
        patch(&path, INITIALIZED_OFF as u64, &1u32.to_le_bytes());

        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 4096)
            .unwrap();
        assert!(matches!(attach(&d), ShmError::Truncated { expected, .. } if expected == len));
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len + 4096)
            .unwrap();
        assert!(matches!(attach(&d), ShmError::Corrupt { .. }));
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();

        patch(&path, 32, &3000u64.to_le_bytes()); // capacity not a power of two
        assert!(matches!(attach(&d), ShmError::Corrupt { .. }));
        patch(&path, 32, &4096u64.to_le_bytes());
        patch(&path, 12, &9u32.to_le_bytes()); // unknown kind
        assert!(matches!(attach(&d), ShmError::Corrupt { .. }));
        patch(&path, 12, &(RingKind::Broadcast as u32).to_le_bytes());
        assert!(matches!(
            attach(&d),
            ShmError::WrongKind {
                found: "broadcast",
                expected: "spsc",
                ..
            }
        ));
        patch(&path, 12, &(RingKind::Spsc as u32).to_le_bytes());
        assert!(
            Consumer::attach(&d.opts(), "r").is_ok(),
            "restored, the region is usable again"
        );
    }

    /// Header sizes no creator could have written, in a (sparse) file big
    /// enough to pass the length checks: a typed error from every ring kind,
    /// never an allocation the header drives (an overwrite-mode broadcast
    /// consumer's copy buffer used to be `max_payload` bytes: 1 TiB here, and
    /// the process aborted).
    #[test]
    fn crafted_sizes_in_a_big_sparse_file_are_refused_not_allocated() {
        use crate::broadcast::{self, BroadcastConfig, Mode};
        let d = Dir::new("crafted");
        let opts = d.opts();
        let cap: u64 = 1 << 40;
        let craft = |name: &str, total: usize, max_payload: u64| {
            let path = d.0.join(name);
            patch(&path, 32, &cap.to_le_bytes());
            patch(&path, 24, &(total as u64).to_le_bytes());
            patch(&path, 40, &max_payload.to_le_bytes());
            OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(total as u64)
                .unwrap();
        };
        let mut cfg = BroadcastConfig::new(4096, 2, Mode::Overwrite);
        cfg.max_payload = Some(256);
        drop(broadcast::Producer::create(&opts, "bc", &cfg).unwrap());
        let layout = crate::mem::RingLayout::new::<broadcast::Control, broadcast::Slot>(
            REGION_HEADER_LEN,
            2,
            cap as usize,
        );
        for max in [(1u64 << 40) - 8, (1 << 39) - 64, u32::MAX as u64] {
            craft("bc", layout.total, max);
            let e = broadcast::Consumer::attach(&opts, "bc").unwrap_err();
            assert!(
                matches!(e, ShmError::Corrupt { .. }),
                "max payload {max}: {e}"
            );
            assert!(e.to_string().contains("max payload"), "{e}");
        }
        // The largest a creator may choose is taken, and its copy buffer
        // costs address space, not memory, until frames that large arrive.
        craft("bc", layout.total, u32::MAX as u64 - 64);
        let c = broadcast::Consumer::attach(&opts, "bc").unwrap();
        drop(c);
        drop(Producer::create(&opts, "sp", &SpscConfig::new(4096)).unwrap());
        let layout = crate::mem::RingLayout::new::<crate::spsc::Control, ()>(
            REGION_HEADER_LEN,
            0,
            cap as usize,
        );
        craft("sp", layout.total, (1 << 40) - 8);
        let e = Consumer::attach(&opts, "sp").unwrap_err();
        assert!(matches!(e, ShmError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("max payload"), "{e}");
        let many = crate::mp_broadcast::MpBroadcastConfig::new(4096, 2, 2);
        drop(crate::mp_broadcast::Ring::create(&opts, "mp", &many).unwrap());
        let layout = crate::mem::RingLayout::new::<
            crate::mp_broadcast::Control,
            crate::mp_broadcast::Slot,
        >(REGION_HEADER_LEN, 4, cap as usize);
        craft("mp", layout.total, (1 << 40) - 8);
        let e = crate::mp_broadcast::Ring::attach(&opts, "mp").unwrap_err();
        assert!(matches!(e, ShmError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("max payload"), "{e}");
        // MPSC: a payload so large that the frame arithmetic would wrap.
        drop(
            crate::mpsc::Consumer::create(&opts, "q", &crate::mpsc::MpscConfig::new(4096, 2))
                .unwrap(),
        );
        let layout = crate::mem::RingLayout::new::<crate::mpsc::Control, crate::mpsc::Slot>(
            REGION_HEADER_LEN,
            2,
            cap as usize,
        );
        craft("q", layout.total, u64::MAX - 7);
        let e = crate::mpsc::Producer::attach(&opts, "q").unwrap_err();
        assert!(matches!(e, ShmError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("max payload"), "{e}");
    }

    /// A directory another user made first (the default path is
    /// predictable, in world-writable /dev/shm), or one others may write to,
    /// is refused for create, attach, remove and reclaim; symbolic links,
    /// FIFOs and directories where a region should be are never opened.
    /// (Failed before: any directory was used, and a symlink to any file was
    /// opened read-write.)
    #[test]
    fn untrusted_directories_and_files_that_are_not_regions_are_refused() {
        use std::os::unix::fs::symlink;
        let d = Dir::new("trust");
        let opts = d.opts();
        let path = d.region();
        let untrusted = |e: ShmError| matches!(e, ShmError::UntrustedDirectory { .. });
        for mode in [0o777, 0o770, 0o722, 0o1777] {
            std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Producer::create(&opts, "new", &SpscConfig::new(4096)).unwrap_err();
            assert!(untrusted(e), "mode {mode:o}");
            assert!(untrusted(attach(&d)), "mode {mode:o}");
            assert!(untrusted(Region::remove(&opts, "r").unwrap_err()));
            assert!(untrusted(Region::reclaim(&opts, "r").unwrap_err()));
            assert!(path.exists());
        }
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Consumer::attach(&opts, "r").is_ok(), "0755 is fine");
        if nix::unistd::geteuid().is_root() {
            // Another user's directory: refused, unless that user is trusted.
            std::os::unix::fs::chown(&d.0, Some(65534), Some(65534)).unwrap();
            let e = attach(&d);
            assert!(untrusted(e), "owned by nobody");
            assert!(attach(&d).to_string().contains("owned by uid 65534"));
            let trusting = ShmOptions {
                trust_dir_owner: Some(65534),
                ..d.opts()
            };
            assert!(Consumer::attach(&trusting, "r").is_ok());
            std::os::unix::fs::chown(&d.0, Some(0), Some(0)).unwrap();
        } else {
            eprintln!("not root: the other-owner case needs chown; skipped");
        }
        // A symlink to a valid region elsewhere is still refused, and so is
        // one to a file that is not a region.
        let elsewhere = Dir::new("trust-target");
        let target = elsewhere.region();
        symlink(&target, d.0.join("link")).unwrap();
        symlink("/etc/passwd", d.0.join("passwd")).unwrap();
        for name in ["link", "passwd"] {
            let e = Consumer::attach(&opts, name).unwrap_err();
            assert!(
                matches!(
                    e,
                    ShmError::NotARegularFile {
                        found: "a symbolic link",
                        ..
                    }
                ),
                "{name}: {e}"
            );
            let e = Region::open(&d.0.join(name)).unwrap_err();
            assert!(matches!(e, ShmError::NotARegularFile { .. }), "{name}: {e}");
        }
        // A symlink where a new region goes: create does not write through it.
        symlink(d.0.join("victim"), d.0.join("made")).unwrap();
        assert!(Producer::create(&opts, "made", &SpscConfig::new(4096)).is_err());
        assert!(
            !d.0.join("victim").exists(),
            "nothing written through the link"
        );
        nix::unistd::mkfifo(&d.0.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::create_dir(d.0.join("sub")).unwrap();
        for (name, found) in [("fifo", "a FIFO"), ("sub", "a directory")] {
            let e = Consumer::attach(&opts, name).unwrap_err();
            assert!(
                matches!(e, ShmError::NotARegularFile { found: f, .. } if f == found),
                "{name}: {e}"
            );
        }
        // A directory given as "" is refused, not taken as the current one.
        let e = Producer::create(&ShmOptions::in_dir(""), "x", &SpscConfig::new(4096)).unwrap_err();
        assert!(matches!(e, ShmError::InvalidConfig(_)), "{e}");
    }

    #[test]
    fn the_default_directory_is_per_user() {
        if std::env::var_os("WEFT_DIR").is_some() {
            eprintln!("WEFT_DIR is set: the default is that; skipped");
            return;
        }
        let want = format!("/dev/shm/weft-{}", nix::unistd::geteuid());
        assert_eq!(default_dir(), PathBuf::from(&want));
        assert_eq!(ShmOptions::default().dir, PathBuf::from(want));
    }

    #[test]
    fn roles_are_single_holder() {
        let d = Dir::new("roles");
        let _p = Producer::create(&d.opts(), "r", &SpscConfig::new(4096)).unwrap();
        assert!(matches!(
            Producer::attach(&d.opts(), "r"),
            Err(ShmError::RoleTaken {
                role: "SPSC producer",
                ..
            })
        ));
        let c = Consumer::attach(&d.opts(), "r").unwrap();
        assert!(matches!(
            Consumer::attach(&d.opts(), "r"),
            Err(ShmError::RoleTaken { .. })
        ));
        drop(c);
        assert!(
            Consumer::attach(&d.opts(), "r").is_ok(),
            "a cleanly closed end may be taken again (restart)"
        );
    }

    #[test]
    fn reclaim_refuses_live_creators_and_removes_dead_ones() {
        let d = Dir::new("reclaim");
        let path = d.region();
        assert!(matches!(
            Region::reclaim(&d.opts(), "r"),
            Err(ShmError::OwnerAlive { .. })
        ));
        let region = Region::open(&path).unwrap();
        assert_eq!(region.creator_state(), CreatorState::Alive);
        drop(region);
        let dead = ProcessId {
            pid: 0x7FFF_FFF0,
            start: 1,
        };
        patch(&path, 56, &dead.to_word().to_le_bytes());
        assert_eq!(
            Region::open(&path).unwrap().creator_state(),
            CreatorState::Dead
        );
        Region::reclaim(&d.opts(), "r").unwrap();
        assert!(!path.exists());
        // A file of another layout version: judged by its creator too.
        let path = d.region();
        patch(&path, 8, &(LAYOUT_VERSION - 1).to_le_bytes());
        assert!(matches!(
            Region::reclaim(&d.opts(), "r"),
            Err(ShmError::OwnerAlive { .. })
        ));
        patch(&path, 56, &dead.to_word().to_le_bytes());
        Region::reclaim(&d.opts(), "r").unwrap();
        assert!(!path.exists(), "an old build's stale file is removed");
        std::fs::write(&path, vec![0xAB; 8192]).unwrap();
        assert!(
            matches!(
                Region::reclaim(&d.opts(), "r"),
                Err(ShmError::NotWeft { .. })
            ),
            "foreign files are never deleted"
        );
        assert!(path.exists());
    }

    #[test]
    fn a_silent_creator_reads_as_stale() {
        let d = Dir::new("stale");
        let path = d.region();
        patch(&path, 72, &1u64.to_le_bytes()); // liveness timeout 1 ns
        patch(&path, HEARTBEAT_OFF as u64, &1u64.to_le_bytes());
        assert_eq!(
            Region::open(&path).unwrap().creator_state(),
            CreatorState::Stale
        );
    }

    #[test]
    fn mlock_and_huge_pages_options() {
        let d = Dir::new("mlock");
        let opts = ShmOptions {
            mlock: true,
            huge_pages: true,
            ..ShmOptions::in_dir(&d.0)
        };
        match Producer::create(&opts, "r", &SpscConfig::new(4096)) {
            Ok(p) => {
                let want = thp_shmem_allows_advise();
                assert_eq!(p.region().unwrap().huge_pages(), want);
            }
            Err(ShmError::Mlock { limit, .. }) => assert!(!limit.is_empty()),
            Err(e) => panic!("{e}"),
        }
    }
}
