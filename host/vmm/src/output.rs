//! Files a command writes its results to (`bench --json`, `--plot`,
//! `conformance --junit`): opened before the run, so a path that cannot be
//! written is refused at once instead of after minutes of work.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An output file, open for writing since before the run. Its old contents
/// stay until [`Output::write`]; a file that `open` created and nobody wrote
/// is removed again.
#[derive(Debug)]
pub(crate) struct Output {
    path: PathBuf,
    file: File,
    created: bool,
    written: bool,
}

impl Output {
    /// Opens `path` for writing without truncating it.
    pub(crate) fn open(path: &Path) -> Result<Self, String> {
        let refuse = |why: String| format!("cannot write {}: {why}", path.display());
        if path.is_dir() {
            return Err(refuse("it is a directory".into()));
        }
        let created = !path.exists();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| refuse(e.to_string()))?;
        Ok(Self { path: path.to_owned(), file, created, written: false })
    }

    /// Replaces the file's contents with `text`.
    pub(crate) fn write(mut self, text: &str) -> Result<(), String> {
        let failed = |e: std::io::Error| format!("writing {}: {e}", self.path.display());
        // Only a regular file can be cut; a pipe or terminal (/dev/stdout)
        // takes the text as it comes.
        if self.file.metadata().is_ok_and(|m| m.is_file()) {
            self.file.set_len(0).map_err(failed)?;
        }
        self.file.write_all(text.as_bytes()).map_err(failed)?;
        self.written = true;
        Ok(())
    }

    /// Where the output goes.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.created && !self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pvkit-output-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("out.txt")
    }

    #[test]
    fn an_existing_file_keeps_its_contents_until_written() {
        let path = scratch("keep");
        std::fs::write(&path, "old contents, longer than the new").unwrap();
        let out = Output::open(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old contents, longer than the new");
        out.write("new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn a_created_file_nobody_wrote_is_removed() {
        let path = scratch("unwritten");
        let _ = std::fs::remove_file(&path);
        drop(Output::open(&path).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn unwritable_paths_are_refused_at_open() {
        let missing = Path::new("/nonexistent-pvkit-dir/out.json");
        assert!(Output::open(missing).unwrap_err().starts_with("cannot write /nonexistent-pvkit-dir/out.json: "));
        let dir = std::env::temp_dir();
        assert!(Output::open(&dir).unwrap_err().ends_with("it is a directory"));
        // Not writable even by root.
        assert!(Output::open(Path::new("/proc/pvkit-test-out.json")).is_err());
    }
}
