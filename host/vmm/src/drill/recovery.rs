//! A snapshot folder prepared for a restore that must leave the snapshot as
//! it is (SNAP-22): a copy of the folder, isolated for a test recovery
//! (SNAP-25) or as the VM file says for a failover (SNAP-27).

use std::fs;
use std::path::{Path, PathBuf};

use crate::config::{NetConfig, VmConfig};
use crate::snapshot::{CONFIG_FILE, MEMORY_FILE, STATE_FILE, disk_file, disks};

/// What the copy is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A test recovery beside the primary: nothing of the primary's.
    Test,
    /// The machine's replacement: its shared disks and its network.
    Failover,
}

/// Makes `to` (which must not exist) a copy of the snapshot folder `from`.
/// `memory.raw` and `state.pvks` are linked when the file system allows
/// (no restored machine writes them: SNAP-1); disk copies are copied. The
/// shared disks a test recovery copied at recovery time, by index.
pub(super) fn prepare(from: &Path, to: &Path, purpose: Purpose) -> Result<Vec<usize>, String> {
    let mut config = VmConfig::load(&from.join(CONFIG_FILE)).map_err(|e| e.to_string())?;
    fs::create_dir(to).map_err(|e| format!("creating {}: {e}", to.display()))?;
    for name in [MEMORY_FILE, STATE_FILE] {
        let (source, target) = (from.join(name), to.join(name));
        if fs::hard_link(&source, &target).is_err() {
            disks::copy(&source, &target).map_err(|e| format!("copying {}: {e}", source.display()))?;
        }
    }
    let mut shared_copied = Vec::new();
    for (n, disk) in config.disks.iter_mut().enumerate() {
        if disk.shared && purpose == Purpose::Failover {
            continue;
        }
        let name = disk_file(n);
        disks::copy(&disk.path, &to.join(&name)).map_err(|e| format!("copying {}: {e}", disk.path.display()))?;
        if disk.shared {
            shared_copied.push(n);
            disk.shared = false;
        }
        disk.path = PathBuf::from(name);
        disk.sha256 = None;
    }
    if purpose == Purpose::Test {
        for (n, net) in config.nets.iter_mut().enumerate() {
            let private =
                NetConfig { socket: Some(to.join(format!("net-{n}.sock"))), listen: true, ..NetConfig::default() };
            *net = NetConfig { mac: net.mac.take(), ..private };
        }
    }
    let text = config.to_toml();
    fs::write(to.join(CONFIG_FILE), text).map_err(|e| format!("writing {}: {e}", to.join(CONFIG_FILE).display()))?;
    Ok(shared_copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot-like folder: its vm.toml names a copied disk, a shared
    /// disk outside it, and a tap.
    fn snapshot(root: &Path) -> PathBuf {
        let from = root.join("snap");
        fs::create_dir_all(&from).unwrap();
        fs::write(from.join(MEMORY_FILE), b"memory").unwrap();
        fs::write(from.join(STATE_FILE), b"state").unwrap();
        fs::write(from.join("disk-0.img"), [1u8; 512]).unwrap();
        fs::write(root.join("shared.img"), [2u8; 512]).unwrap();
        let toml = format!(
            "pvkit = 1\n[boot]\nkernel = \"/k\"\n[[disk]]\npath = \"disk-0.img\"\n[[disk]]\npath = \"{}\"\nshared = true\n\
             [[net]]\ntap = \"tap-primary\"\nmac = \"52:54:00:12:34:56\"\n",
            root.join("shared.img").display()
        );
        fs::write(from.join(CONFIG_FILE), toml).unwrap();
        from
    }

    fn scratch(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("pvkit-drill-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        root
    }

    #[test]
    fn a_test_recovery_copies_every_disk_and_takes_a_private_network() {
        let root = scratch("test");
        let from = snapshot(&root);
        let to = root.join("copy");
        assert_eq!(prepare(&from, &to, Purpose::Test).unwrap(), [1]);
        let config = VmConfig::load(&to.join(CONFIG_FILE)).unwrap();
        assert_eq!(config.disks[0].path, to.join("disk-0.img"));
        assert_eq!(config.disks[1].path, to.join("disk-1.img"));
        assert!(!config.disks[1].shared);
        assert_eq!(fs::read(to.join("disk-1.img")).unwrap(), [2u8; 512]);
        let net = &config.nets[0];
        assert_eq!(
            (net.tap.as_deref(), net.socket.as_deref(), net.listen),
            (None, Some(&*to.join("net-0.sock")), true)
        );
        assert_eq!(net.mac.as_deref(), Some("52:54:00:12:34:56"));
        // The copy's disk is its own: writing it leaves the snapshot's alone.
        fs::write(to.join("disk-0.img"), [9u8; 512]).unwrap();
        assert_eq!(fs::read(from.join("disk-0.img")).unwrap(), [1u8; 512]);
        assert_eq!(fs::read(to.join(MEMORY_FILE)).unwrap(), b"memory");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_failover_keeps_shared_disks_and_the_network() {
        let root = scratch("failover");
        let from = snapshot(&root);
        let to = root.join("promoted");
        assert!(prepare(&from, &to, Purpose::Failover).unwrap().is_empty());
        let config = VmConfig::load(&to.join(CONFIG_FILE)).unwrap();
        assert_eq!(config.disks[1].path, root.join("shared.img"));
        assert!(config.disks[1].shared);
        assert_eq!(config.nets[0].tap.as_deref(), Some("tap-primary"));
        // A folder that is there already is refused, and left alone.
        let err = prepare(&from, &to, Purpose::Failover).unwrap_err();
        assert!(err.starts_with(&format!("creating {}: ", to.display())), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }
}
