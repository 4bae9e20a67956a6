//! The service's SQL, and the only place that speaks it: one function per
//! statement, reading and writing domain values, on PostgreSQL and SQLite
//! alike (the `Any` driver, `$n` placeholders). Every query names its
//! workspace. Transactions are opened and committed by the operations in
//! [`crate::inbox`] and [`crate::members`], which pass them in.

pub(crate) mod conversations;
pub(crate) mod members;
pub(crate) mod messages;
pub(crate) mod settings;

/// A stored number read as one of the API's enums; a number the enum does
/// not know reads as `unknown`.
fn enum_or<E: TryFrom<i32>>(stored: i64, unknown: E) -> E {
    i32::try_from(stored)
        .ok()
        .and_then(|n| E::try_from(n).ok())
        .unwrap_or(unknown)
}

/// A stored optional text: NULL and empty both mean "none".
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

#[cfg(test)]
pub(crate) mod testing {
    use telenet_store::testing::Backend;
    pub(crate) use telenet_store::testing::TestDb;

    /// A migrated database on `backend`, kept while this lives.
    pub(crate) async fn db(backend: Backend) -> TestDb {
        backend.database(crate::NAME, &crate::MIGRATIONS).await
    }
}
