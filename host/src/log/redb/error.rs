//! redb's errors as [`LogError`]s. Everything here means "nothing was written", except a
//! failed commit, which the writer maps to [`LogError::OutcomeUnknown`] itself.

use crate::log::{LogError, StorageFailure};

const BACKEND: &str = "redb";

pub(super) fn storage(e: impl std::error::Error + Send + Sync + 'static) -> StorageFailure {
    StorageFailure::new(BACKEND, e)
}

macro_rules! from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for LogError {
            fn from(e: $ty) -> Self {
                LogError::Storage(storage(e))
            }
        }
    )*};
}

from_redb!(
    ::redb::Error,
    ::redb::DatabaseError,
    ::redb::TableError,
    ::redb::StorageError,
    ::redb::CommitError
);

impl From<::redb::TransactionError> for LogError {
    fn from(e: ::redb::TransactionError) -> Self {
        // Through redb::Error, which owns the variants' payloads in a Send + Sync form.
        LogError::Storage(storage(::redb::Error::from(e)))
    }
}
