//! Load numbers: every successfully loaded plugin version gets the next one.
//! They are recorded in dead letters, which outlive the process, so the daemon
//! keeps the last number in a small file of the data directory and continues
//! from it after a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

pub(super) struct LoadNumbers {
    last: Mutex<u64>,
    /// `None`: numbers start at 1 in every process (tools and tests).
    file: Option<PathBuf>,
}

impl LoadNumbers {
    pub fn in_memory() -> Self {
        LoadNumbers {
            last: Mutex::new(0),
            file: None,
        }
    }

    /// Continues from the number in `file` (0 when it does not exist yet).
    pub fn open(file: &Path) -> std::io::Result<Self> {
        let last = match std::fs::read_to_string(file) {
            Ok(text) => text.trim().parse::<u64>().map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not a load number: {e}", file.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(LoadNumbers {
            last: Mutex::new(last),
            file: Some(file.to_owned()),
        })
    }

    pub fn describe(&self) -> String {
        self.file
            .as_ref()
            .map_or_else(|| "memory".to_owned(), |f| f.display().to_string())
    }

    /// The next number, durable before it is handed out (temp file, fsync,
    /// rename), so no number is ever given to two versions. Blocking.
    pub fn next(&self) -> std::io::Result<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let n = *last + 1;
        if let Some(file) = &self.file {
            let tmp = file.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{n}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, file)?;
        }
        *last = n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_continue_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plugin-load-number");
        let a = LoadNumbers::open(&file).unwrap();
        assert_eq!((a.next().unwrap(), a.next().unwrap()), (1, 2));
        let b = LoadNumbers::open(&file).unwrap();
        assert_eq!(b.next().unwrap(), 3);
        std::fs::write(&file, "garbage").unwrap();
        assert!(LoadNumbers::open(&file).is_err());
    }
}
