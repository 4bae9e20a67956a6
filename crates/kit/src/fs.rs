//! Files a process keeps in its data directory.

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` (created or replaced), readable and writable by
/// the owner only: tokens and keys a single-process installation keeps.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_owner_may_read_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("key");
        super::write_private(&path, b"secret").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
