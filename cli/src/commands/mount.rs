//! `cairn mount`: the repository as a read-only FUSE filesystem. This file
//! only translates: FUSE requests to calls of
//! [`cairn_store::ops::browse::Browser`] (which owns the layout, the lazy
//! tree reads, the caches and the checked reads) and its errors to errno
//! values, a read that fails a check to EIO, never to bytes. It runs in
//! the foreground and unmounts on Ctrl-C or SIGTERM (through
//! [`crate::interrupt`]); an `umount` from outside ends it with success.
//! Never writes anywhere.

use crate::args::MountArgs;
use crate::context::Context;
use crate::exit;
use crate::interrupt;
use anyhow::{Context as _, Result, bail};
use cairn_store::StoreError;
use cairn_store::ops::browse::{Attributes, BrowseOptions, Browser, NodeKind, OpenFile};
use cairn_store::ops::listing::list_snapshots;
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, Request, Session, SessionACL,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// How long the kernel may keep names and attributes: snapshots never
/// change, but a forgotten node lets the browser free its entry sooner.
const TTL: Duration = Duration::from_secs(60);

/// Threads serving requests: one slow read (a pack far away) need not
/// hold up an `ls` in another directory.
const THREADS: usize = 4;

pub fn run(context: &Context, args: &MountArgs) -> Result<u8> {
    let mountpoint = &args.mountpoint;
    if !mountpoint.is_dir() {
        bail!(
            "mountpoint {} is not an existing directory",
            mountpoint.display()
        );
    }
    let repository = context.open_repository()?;
    repository.require_read_key("the files `mount` shows")?;
    let trusted = context.trusted_keys(&repository)?;
    let (listed, broken) = list_snapshots(&repository, &trusted)?;
    for (id, why) in &broken {
        eprintln!("cairn: warning: snapshot {id} cannot be read, not shown: {why}");
    }
    // The filters, with tags as they stand now (`cairn tag` annotations).
    let filter = args.filter.filter();
    let annotations = cairn_store::ops::annotate::read_annotations(&repository, &trusted)?;
    let mut snapshots = Vec::new();
    for summary in listed {
        let tags = annotations.effective(&summary.id, &summary.body).tags;
        if !filter.matches(&summary.body, &tags) {
            continue;
        }
        match summary.trusted {
            Ok(()) => snapshots.push((summary.id, summary.body)),
            Err(why) => eprintln!(
                "cairn: warning: snapshot {} is not shown: {why}",
                summary.id.short()
            ),
        }
    }
    let opened = context.open_index(&repository)?;
    // SAFETY: getuid and getgid have no preconditions and cannot fail.
    let owner = unsafe { (libc::getuid(), libc::getgid()) };
    let browser = Browser::new(
        repository,
        opened.index,
        snapshots,
        BrowseOptions {
            owner,
            ..BrowseOptions::default()
        },
    );
    let shown = browser.snapshot_count();

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("cairn".into()),
        MountOption::Subtype("cairn".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        // The kernel checks each file's recorded mode and owner.
        MountOption::DefaultPermissions,
    ];
    if args.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(THREADS);
    let filesystem = CairnFilesystem {
        browser,
        open_files: Mutex::new(HashMap::new()),
        next_handle: AtomicU64::new(1),
    };
    let mut session = Session::new(filesystem, mountpoint, &config).with_context(|| {
        format!(
            "mounting at {}: FUSE needs /dev/fuse, and a non-root user needs fusermount3 (Debian: apt-get install fuse3)",
            mountpoint.display()
        )
    })?;
    let mut unmounter = session.unmount_callable();
    let shown_at = mountpoint.display().to_string();
    let lazy_target = mountpoint.clone();
    interrupt::undo_on_interrupt(Box::new(move || {
        if unmounter.unmount().is_err() {
            // Busy (a shell inside it): detach now, the kernel finishes
            // once the last user leaves.
            detach(&lazy_target);
        }
        eprintln!("cairn: unmounted {shown_at}");
    }));
    eprintln!(
        "cairn: {shown} snapshot(s) mounted read-only at {}; Ctrl-C, SIGTERM or `umount {}` unmounts",
        mountpoint.display(),
        mountpoint.display()
    );
    let served = session.run();
    if let Some(code) = interrupt::interrupted() {
        // The signal thread unmounted and exits with this code.
        return Ok(code);
    }
    served.with_context(|| format!("serving the mount at {}", mountpoint.display()))?;
    Ok(exit::SUCCESS)
}

/// Lazily unmounts `path` (MNT_DETACH), as root; `fusermount3 -u -z`
/// otherwise. Best effort: said, never fatal, on the way out.
fn detach(path: &std::path::Path) {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; umount2 has no other
    // preconditions.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return;
    }
    let status = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(path)
        .status();
    if !status.is_ok_and(|status| status.success()) {
        eprintln!(
            "cairn: warning: could not unmount {}; run `umount -l {}`",
            path.display(),
            path.display()
        );
    }
}

struct CairnFilesystem {
    browser: Browser,
    open_files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_handle: AtomicU64,
}

impl CairnFilesystem {
    /// Says what failed (the library names the object and the path) and
    /// gives the errno: EIO for damage or anything else that went wrong.
    fn failed(&self, doing: &str, node: u64, error: &StoreError) -> Errno {
        eprintln!(
            "cairn: mount: {doing} {}: {error}",
            self.browser.describe(node)
        );
        Errno::EIO
    }

    fn open_file(&self, handle: FileHandle) -> Option<Arc<OpenFile>> {
        self.open_files
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&handle.0)
            .cloned()
    }
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Directory => FileType::Directory,
        NodeKind::File => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
    }
}

fn file_attr(attributes: &Attributes) -> FileAttr {
    let mtime = if attributes.mtime >= 0 {
        UNIX_EPOCH + Duration::new(attributes.mtime.unsigned_abs(), attributes.mtime_nanos)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(attributes.mtime.unsigned_abs()))
            .and_then(|time| time.checked_add(Duration::from_nanos(attributes.mtime_nanos.into())))
            .unwrap_or(UNIX_EPOCH)
    };
    FileAttr {
        ino: INodeNo(attributes.node),
        size: attributes.size,
        blocks: attributes.size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(attributes.kind),
        perm: (attributes.mode & 0o7777) as u16,
        // 1 for directories too: "unknown", so `find` does not skip
        // subdirectories by counting links.
        nlink: 1,
        uid: attributes.uid,
        gid: attributes.gid,
        rdev: 0,
        // Readers size their buffers by this; chunks are far larger.
        blksize: 128 * 1024,
        flags: 0,
    }
}

impl Filesystem for CairnFilesystem {
    fn lookup(&self, _request: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.browser.lookup(parent.0, name.as_bytes()) {
            Ok(Some(attributes)) => reply.entry(&TTL, &file_attr(&attributes), Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(error) => reply.error(self.failed("looking up a name in", parent.0, &error)),
        }
    }

    fn forget(&self, _request: &Request, node: INodeNo, lookups: u64) {
        self.browser.forget(node.0, lookups);
    }

    fn getattr(&self, _request: &Request, node: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        match self.browser.attributes(node.0) {
            Ok(attributes) => reply.attr(&TTL, &file_attr(&attributes)),
            Err(error) => reply.error(self.failed("reading the attributes of", node.0, &error)),
        }
    }

    fn readlink(&self, _request: &Request, node: INodeNo, reply: ReplyData) {
        match self.browser.read_link(node.0) {
            Ok(target) => reply.data(&target),
            Err(error) => reply.error(self.failed("reading the link", node.0, &error)),
        }
    }

    fn open(&self, _request: &Request, node: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            reply.error(Errno::EROFS);
            return;
        }
        match self.browser.open(node.0) {
            Ok(file) => {
                let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
                self.open_files
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .insert(handle, Arc::new(file));
                // Content never changes: the kernel may keep its pages.
                reply.opened(FileHandle(handle), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(error) => reply.error(self.failed("opening", node.0, &error)),
        }
    }

    fn read(
        &self,
        _request: &Request,
        node: INodeNo,
        handle: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.open_file(handle) else {
            reply.error(Errno::EBADF);
            return;
        };
        match self.browser.read(&file, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(error) => reply.error(self.failed("reading", node.0, &error)),
        }
    }

    fn release(
        &self,
        _request: &Request,
        _node: INodeNo,
        handle: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.open_files
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&handle.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _request: &Request,
        node: INodeNo,
        _handle: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Positions 0 and 1 are `.` and `..`; entry i of the browser's
        // listing is position i + 2 (the offset FUSE hands back is the
        // position of the next entry).
        let mut position = offset;
        if position == 0 {
            if reply.add(node, 1, FileType::Directory, ".") {
                reply.ok();
                return;
            }
            position = 1;
        }
        if position == 1 {
            let parent = INodeNo(self.browser.parent(node.0));
            if reply.add(parent, 2, FileType::Directory, "..") {
                reply.ok();
                return;
            }
            position = 2;
        }
        let listed = self.browser.list(node.0, position - 2, &mut |next, entry| {
            // An entry not looked up yet has no node; readdir's inode
            // number is advisory, and libfuse uses this one for unknown.
            let ino = INodeNo(entry.node.unwrap_or(0xffff_ffff));
            !reply.add(
                ino,
                next + 2,
                file_type(entry.kind),
                OsStr::from_bytes(&entry.name),
            )
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(self.failed("listing", node.0, &error)),
        }
    }

    fn statfs(&self, _request: &Request, _node: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 128 * 1024, 255, 0);
    }
}
