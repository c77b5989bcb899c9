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
/// A refused write (no root, or a read-only `/proc/sys` in a container) is
/// [`Error::Privilege`].
pub fn write_sysctl(key: &str, value: &str) -> Result<(), Error> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| match e.raw_os_error() {
        Some(code)
            if [Errno::EACCES, Errno::EPERM, Errno::EROFS]
                .map(|e| e as i32)
                .contains(&code) =>
        {
            Error::Privilege(format!(
                "setting {key} = {value} was refused ({e}): writing sysctls needs root or \
                 CAP_NET_ADMIN and a writable /proc/sys"
            ))
        }
        _ => Error::io(&format!("setting {key} = {value} ({})", path.display()), e),
    })
}

/// Linux capability numbers (`linux/capability.h`).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// The capabilities named in `needed` that an effective-capability mask (`CapEff` of
/// `/proc/self/status`, hexadecimal) lacks. Pure: the mask is passed in.
pub fn missing_capabilities(cap_eff_hex: &str) -> Result<Vec<&'static str>, String> {
    let mask = u64::from_str_radix(cap_eff_hex.trim(), 16).map_err(|e| {
        format!(
            "CapEff '{}' is not a hexadecimal mask: {e}",
            cap_eff_hex.trim()
        )
    })?;
    Ok([
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| mask & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect())
}

/// Checks, before anything is touched, that this process has the capabilities the emulator
/// needs (CAP_NET_ADMIN for TUN devices and sysctls, CAP_SYS_ADMIN for namespaces), from
/// `CapEff` in `/proc/self/status`. Fails with [`Error::Privilege`] naming what is missing.
pub fn check_privileges() -> Result<(), Error> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("reading /proc/self/status", e))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or_else(|| Error::Setup("/proc/self/status has no CapEff line".into()))?;
    let missing = missing_capabilities(eff).map_err(Error::Setup)?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Privilege(format!(
            "this process lacks {} (effective capabilities {})",
            missing.join(" and "),
            eff.trim()
        )))
    }
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

#[cfg(test)]
mod tests {
    use super::missing_capabilities;

    #[test]
    fn names_each_missing_capability() {
        // root's usual full mask, nobody's empty one, and each of the two alone.
        assert!(missing_capabilities("000001ffffffffff").unwrap().is_empty());
        assert_eq!(
            missing_capabilities("0000000000000000").unwrap(),
            ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
        );
        assert_eq!(
            missing_capabilities("0000000000001000").unwrap(),
            ["CAP_SYS_ADMIN"]
        );
        assert_eq!(
            missing_capabilities("0000000000200000").unwrap(),
            ["CAP_NET_ADMIN"]
        );
        assert!(missing_capabilities("zz").is_err());
    }
}
