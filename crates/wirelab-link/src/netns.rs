//! Network namespaces, per thread.
//!
//! The emulator's namespaces are *anonymous*: a helper thread calls `unshare(CLONE_NEWNET)`,
//! sets the namespace up, and the namespace is then held by an open file descriptor
//! (`/proc/thread-self/ns/net`) and by whichever threads [`Namespace::enter`] it. Nothing is
//! named in `/run/netns`, so nothing can be left behind: when the process exits, by any path
//! (return, panic, Ctrl-C, even `SIGKILL`), the kernel closes the descriptors, the namespaces
//! and the TUN devices in them go with it. Names are still unique per process (the TUN devices
//! carry the process id) so that `ip` output from inside is readable.
//!
//! Entering a network namespace is per thread (`setns(2)` affects only the caller), and a
//! socket keeps the namespace it was created in wherever it is used afterwards. A tokio
//! runtime whose threads all entered the server namespace therefore serves there.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sched::CloneFlags;

use crate::Error;

/// A network namespace, held open by a file descriptor.
#[derive(Debug)]
pub struct Namespace {
    file: File,
    ino: u64,
}

impl Namespace {
    /// The network namespace of the calling thread.
    pub fn current() -> io::Result<Self> {
        let file = File::open("/proc/thread-self/ns/net")?;
        let ino = file.metadata()?.ino();
        Ok(Self { file, ino })
    }

    /// The namespace's inode number: the id `ip netns identify` and `/proc/*/ns/net` show.
    pub fn id(&self) -> u64 {
        self.ino
    }

    /// Moves the calling thread into this namespace. Sockets it creates from now on belong
    /// here; sockets it created before keep theirs.
    pub fn enter(&self) -> io::Result<()> {
        nix::sched::setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
    }

    /// Creates a new anonymous network namespace on a helper thread, runs `setup` inside it,
    /// and returns the namespace with `setup`'s result. The helper thread then exits; the
    /// namespace lives as long as the returned value or a thread inside it.
    pub fn create<T, F>(setup: F) -> Result<(Self, T), Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        let helper = std::thread::Builder::new()
            .name("wl-netns".into())
            .spawn(move || {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| match e {
                    Errno::EPERM => Error::Privilege(
                        "creating a network namespace (unshare CLONE_NEWNET) was refused: it \
                         needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN"
                            .into(),
                    ),
                    e => Error::io("creating a network namespace", e.into()),
                })?;
                let ns = Namespace::current()
                    .map_err(|e| Error::io("opening /proc/thread-self/ns/net", e))?;
                let t = setup()?;
                Ok((ns, t))
            })
            .map_err(|e| Error::io("starting the namespace helper thread", e))?;
        helper
            .join()
            .map_err(|_| Error::Setup("the namespace helper thread panicked".into()))?
    }
}

/// Writes a sysctl of the calling thread's network namespace (`/proc/sys/net/...` resolves
/// to the namespace of the thread that opens it).
pub fn write_sysctl(key: &str, value: &str) -> Result<(), Error> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value)
        .map_err(|e| Error::io(&format!("setting {key} = {value} ({})", path.display()), e))
}

/// Reads a sysctl of the calling thread's network namespace.
pub fn read_sysctl(key: &str) -> Result<String, Error> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io(&format!("reading {key}"), e))
}

/// Checks what the emulator needs before trying: `/dev/net/tun` present and openable.
pub fn check_tun_device() -> Result<(), Error> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Privilege(
            "/dev/net/tun does not exist: load the tun module (`modprobe tun`) or, in a \
             container, pass the device in (`--device /dev/net/tun`)"
                .into(),
        )),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(Error::Privilege(
            "/dev/net/tun cannot be opened (permission denied): TUN devices need root or \
             CAP_NET_ADMIN"
                .into(),
        )),
        Err(e) => Err(Error::io("opening /dev/net/tun", e)),
    }
}
