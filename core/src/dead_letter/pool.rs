//! A few open connections to the dead-letter store, reused by callers that
//! come and go (the HTTP server's requests): opening one is, in SQLite, a
//! file and its pragmas, and in PostgreSQL a connection, its TLS and a
//! check of the schema, too much to pay on every request.

use std::sync::{Mutex, PoisonError};

use super::{DeadLetterStore, StoreError};
use crate::journal::Location;

/// The most idle stores kept open.
pub(super) const IDLE: usize = 4;

/// Stores at one location, opened when first needed and kept for the next
/// caller. Callers never share one at once: each takes an idle store (or
/// opens one) and gives it back when done.
#[derive(Debug)]
pub struct StorePool {
    at: Location,
    idle: Mutex<Vec<DeadLetterStore>>,
}

impl StorePool {
    pub fn new(at: Location) -> Self {
        Self {
            at,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Where the stores are.
    pub fn location(&self) -> &Location {
        &self.at
    }

    /// Idle stores kept now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    /// Runs `work` on an idle store, or on one opened for it (blocking:
    /// call it off the runtime). The store is kept for the next caller
    /// only if `work` succeeded: after an error its connection may be the
    /// cause. `work` is not run again on another store: it may have
    /// written before it failed.
    pub fn with<T>(
        &self,
        work: impl FnOnce(&DeadLetterStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let taken = self.lock().pop();
        let store = match taken {
            Some(store) => store,
            None => DeadLetterStore::open(&self.at)?,
        };
        let done = work(&store)?;
        let mut idle = self.lock();
        if idle.len() < IDLE {
            idle.push(store);
        }
        Ok(done)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DeadLetterStore>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::DeadLetterLog as _;

    fn pool() -> (crate::journal::testing::TempDir, StorePool) {
        let dir = crate::journal::testing::TempDir::new("dlq-pool");
        let pool = StorePool::new(Location::Sqlite(dir.path().to_path_buf()));
        (dir, pool)
    }

    #[test]
    fn a_store_is_opened_once_and_reused_after_success() {
        let (dir, pool) = pool();
        assert_eq!(pool.idle(), 0, "nothing opened before it is needed");
        assert_eq!(pool.with(|s| s.next_seq()).expect("opens"), 1);
        assert_eq!(pool.idle(), 1);
        // Where the store was is now a file: opening there again fails, so
        // only the store kept open can serve the next caller.
        std::fs::remove_dir_all(dir.path()).expect("remove");
        std::fs::write(dir.path(), b"not a directory").expect("a file in its place");
        assert!(DeadLetterStore::open(pool.location()).is_err());
        assert_eq!(pool.with(|s| s.next_seq()).expect("reused"), 1);
        assert_eq!(pool.idle(), 1, "given back");
        std::fs::remove_file(dir.path()).expect("clean up");
        std::fs::create_dir(dir.path()).expect("for the guard");
    }

    #[test]
    fn a_store_whose_work_failed_is_closed_and_callers_at_once_get_their_own() {
        let (_dir, pool) = pool();
        let failed: Result<(), StoreError> = pool.with(|_| {
            Err(StoreError::Sqlite {
                path: "test".into(),
                source: rusqlite::Error::InvalidQuery,
            })
        });
        assert!(failed.is_err());
        assert_eq!(pool.idle(), 0, "not kept after an error");
        // Two callers at once: the second opens its own, and both are kept.
        pool.with(|_| pool.with(|_| Ok(()))).expect("nested");
        assert_eq!(pool.idle(), 2);
        // Never more than IDLE kept.
        fn nest(pool: &StorePool, depth: usize) -> Result<(), StoreError> {
            pool.with(|_| {
                if depth > 0 {
                    nest(pool, depth - 1)
                } else {
                    Ok(())
                }
            })
        }
        nest(&pool, IDLE + 2).expect("nested");
        assert_eq!(pool.idle(), IDLE);
    }
}
