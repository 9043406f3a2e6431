//! The SQL of the SQLite store: its statements (from `src/store/queries/sqlite/`), the
//! compare-and-set statement of one save, and the multi-row statements of the grouped
//! reader and the group-commit writer.

use sqlx::Sqlite;
use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;

use crate::store::Version;
use crate::store::sql;

sql::queries!(
    /// The SQLite statements, rendered for one table. The `_many` ones are templates
    /// with a `{rows}` placeholder, filled by [`Queries::select_keys`],
    /// [`Queries::update_rows`] and [`Queries::insert_rows`].
    struct Queries in "sqlite" {
        create_table,
        create_index,
        load,
        insert,
        update,
        delete,
        current_version,
        delete_expired,
        list,
        purge,
        load_many,
        update_many,
        insert_many,
        create_lease_table,
        lease_acquire_many,
        lease_release_many,
        lease_take,
        lease_release,
        lease_renew,
        lease_purge,
        has_pending,
        has_due,
        add_due,
        carry_pending,
        create_pending_index,
        pending_keys,
    }
);

/// A compare-and-set statement of one save, with its parameters bound.
pub(super) type SaveQuery<'q> = Query<'q, Sqlite, SqliteArguments<'q>>;

impl Queries {
    /// A read of `keys` records at once (binds each key).
    pub(super) fn select_keys(&self, keys: usize) -> String {
        with_rows(&self.load_many, "?", keys)
    }

    /// An update of `rows` records at once, each only if its version is the expected one
    /// and it is live (binds key, data, new version, expiry, expected version and now for
    /// each row, and when its work falls due); returns the keys it wrote.
    pub(super) fn update_rows(&self, rows: usize) -> String {
        with_rows(&self.update_many, "(?,?,?,?,?,?,?)", rows)
    }

    /// An insert of `rows` new records at once, over expired rows only (binds key, data,
    /// version, expiry and due time for each row, then the time before which a
    /// row in the way has expired); returns the keys it wrote.
    pub(super) fn insert_rows(&self, rows: usize) -> String {
        with_rows(&self.insert_many, "(?,?,?,?,?)", rows)
    }

    /// A take of `rows` leases at once, each only where the key has no live lease
    /// (binds key, token and expiry for each row, then the time before which a lease in
    /// the way has expired); returns, for each lease it took, its token and the key's
    /// stored data, version and expiry (`NULL`s when the key has no record).
    pub(super) fn acquire_leases(&self, rows: usize) -> String {
        with_rows(&self.lease_acquire_many, "(?,?,?)", rows)
    }

    /// A release of `rows` leases at once, each only if its token still holds it (binds
    /// key and token for each row); returns the tokens of the leases it released.
    pub(super) fn release_leases(&self, rows: usize) -> String {
        with_rows(&self.lease_release_many, "(?,?)", rows)
    }

    /// The compare-and-set statement of one save (an insert when `expected` is `None`),
    /// and the version it writes; `due` puts the row in the index of due work.
    pub(super) fn save<'q>(&'q self, key: &'q str, save: &'q SaveRow) -> (Version, SaveQuery<'q>) {
        let (insert, update) = (&self.insert, &self.update);
        let SaveRow {
            bytes,
            expected,
            now,
            expires_at,
            due,
        } = save;
        let args = sql::SaveArgs {
            key,
            bytes,
            expected: *expected,
            now: *now,
            expires_at: *expires_at,
            due: *due,
        };
        sql::save_query(insert, update, args)
    }
}

/// What one save writes (besides its key): the record, the version it expects, the time
/// it is written at, when it expires and when its work falls due.
#[derive(Debug)]
pub(super) struct SaveRow {
    pub(super) bytes: Vec<u8>,
    pub(super) expected: Option<Version>,
    pub(super) now: i64,
    pub(super) expires_at: Option<i64>,
    pub(super) due: Option<i64>,
}

impl From<sql::SaveArgs<'_>> for SaveRow {
    /// The save's row, its record copied (for the group-commit writer, which outlives
    /// the caller's borrow).
    fn from(args: sql::SaveArgs<'_>) -> Self {
        Self {
            bytes: args.bytes.to_vec(),
            expected: args.expected,
            now: args.now,
            expires_at: args.expires_at,
            due: args.due,
        }
    }
}

/// `template` with `{rows}` replaced by `n` copies of `row`, comma-separated.
fn with_rows(template: &str, row: &str, n: usize) -> String {
    let (head, tail) = template.split_once("{rows}").unwrap_or((template, ""));
    let mut text = String::with_capacity(template.len() + n * (row.len() + 1));
    text.push_str(head);
    for i in 0..n {
        if i > 0 {
            text.push(',');
        }
        text.push_str(row);
    }
    text.push_str(tail);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::Statements;

    #[test]
    fn multi_row_statements_have_a_placeholder_per_parameter() {
        let q = Queries::render("t");
        assert_eq!(q.select_keys(3).matches('?').count(), 3);
        assert!(
            q.select_keys(3).contains("IN (?,?,?)"),
            "{}",
            q.select_keys(3)
        );
        assert_eq!(q.update_rows(4).matches('?').count(), 4 * 7);
        assert_eq!(q.insert_rows(2).matches('?').count(), 2 * 5 + 1);
        assert!(!q.update_rows(1).contains('{'), "{}", q.update_rows(1));
        assert!(q.update_rows(1).contains("UPDATE \"t\""));
        assert_eq!(q.acquire_leases(3).matches('?').count(), 3 * 3 + 1);
        assert!(q.acquire_leases(1).contains("INTO \"t_lease\""));
        assert_eq!(q.release_leases(2).matches('?').count(), 2 * 2);
    }
}
