//! Key management over the sealed columns ([`crate::sealed::SEALED`]): which key seals how many
//! values, rotation (re-sealing in batches every value not under the current key), sealing what a
//! migration left in plaintext, and reading one sealed value back (operators, tests).

use tokio_postgres::types::ToSql;

use crate::crypto::{CryptoError, Place};
use crate::sealed::{SEALED, SealedTable, sealed_column, sealed_error};
use crate::{Store, StoreError};

/// How many values of one column were re-sealed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resealed {
    /// `table.column`.
    pub column: String,
    /// Values re-sealed under the current key.
    pub resealed: u64,
}

/// How many values of one column one key seals.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyUsage {
    /// `table.column`.
    pub column: String,
    /// The key id in the values' header (`?` for a value without a readable header).
    pub key_id: String,
    /// How many values.
    pub values: i64,
}

/// The distinct row columns a table's sealed values are bound to, in order.
fn row_columns(t: &SealedTable) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for c in t.columns {
        for r in c.row {
            if !out.contains(r) {
                out.push(r);
            }
        }
    }
    out
}

/// `k1 = $n::text::type AND …` for the table's key, parameters from `first`.
fn key_match(t: &SealedTable, first: usize) -> String {
    t.key
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| format!("{name} = ${}::text::{ty}", first + i))
        .collect::<Vec<_>>()
        .join(" AND ")
}

impl Store {
    /// Re-seals, in batches of `batch` rows (one transaction each, rows others hold skipped and
    /// taken by a later batch), every sealed value not under the current key. Old keys must still
    /// be configured to open them. Idempotent: a second run finds nothing. Returns the count per
    /// column.
    pub async fn rotate_keys(&self, batch: i64) -> Result<Vec<Resealed>, StoreError> {
        let mut report = Vec::new();
        for t in SEALED {
            let mut counts = vec![0u64; t.columns.len()];
            loop {
                let done = self.rotate_batch(t, batch.max(1), &mut counts).await?;
                if done == 0 {
                    break;
                }
            }
            for (c, n) in t.columns.iter().zip(counts) {
                report.push(Resealed {
                    column: format!("{}.{}", t.table, c.name),
                    resealed: n,
                });
            }
        }
        Ok(report)
    }

    /// One batch of [`Store::rotate_keys`] on table `t`; returns how many rows it changed.
    async fn rotate_batch(
        &self,
        t: &SealedTable,
        batch: i64,
        counts: &mut [u64],
    ) -> Result<usize, StoreError> {
        let header = self.keys.current_header();
        let header_len = i32::try_from(header.len()).unwrap_or(i32::MAX);
        let rows_cols = row_columns(t);
        let keys_sql: Vec<String> = t.key.iter().map(|(k, _)| format!("{k}::text")).collect();
        let place_sql: Vec<String> = rows_cols.iter().map(|r| format!("{r}::text")).collect();
        let values_sql: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
        let stale: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("({0} IS NOT NULL AND substring({0} FROM 1 FOR $1) <> $2)", c.name))
            .collect();
        let order: Vec<&str> = t.key.iter().map(|(k, _)| *k).collect();
        let select = format!(
            "SELECT {}, {}, {} FROM {} WHERE {} ORDER BY {} LIMIT $3 FOR UPDATE SKIP LOCKED",
            keys_sql.join(", "),
            place_sql.join(", "),
            values_sql.join(", "),
            t.table,
            stale.join(" OR "),
            order.join(", "),
        );
        let sets: Vec<String> = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ${}", c.name, i + 1))
            .collect();
        let update = format!(
            "UPDATE {} SET {} WHERE {}",
            t.table,
            sets.join(", "),
            key_match(t, t.columns.len() + 1)
        );
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx.query(&select, &[&header_len, &header, &batch]).await?;
        let (nk, np) = (t.key.len(), rows_cols.len());
        for row in &rows {
            let key: Vec<String> = (0..nk).map(|i| row.get(i)).collect();
            let parts: Vec<String> = (0..np).map(|i| row.get(nk + i)).collect();
            let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(t.columns.len());
            for (i, c) in t.columns.iter().enumerate() {
                let value: Option<Vec<u8>> = row.get(nk + np + i);
                let place_row: Vec<&str> = c
                    .row
                    .iter()
                    .map(|r| {
                        rows_cols
                            .iter()
                            .position(|x| x == r)
                            .map_or("", |p| parts[p].as_str())
                    })
                    .collect();
                let place = Place::new(c.label, &place_row);
                values.push(match value {
                    Some(v) if !self.keys.is_current(&v) => {
                        let plain = self.keys.open(&v, &place).map_err(|e| sealed_error(&place, e))?;
                        counts[i] += 1;
                        Some(self.keys.seal(&plain, &place))
                    }
                    other => other,
                });
            }
            let mut params: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            params.extend(key.iter().map(|k| k as &(dyn ToSql + Sync)));
            tx.execute(&update, &params).await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// How many values each key seals, per column (what is left to rotate, and when an old key
    /// may be removed: once no column names it).
    pub async fn key_usage(&self) -> Result<Vec<KeyUsage>, StoreError> {
        let client = self.pool.get().await?;
        let mut out = Vec::new();
        for t in SEALED {
            for c in t.columns {
                let sql = format!(
                    "SELECT CASE WHEN length({0}) >= 2 AND get_byte({0}, 0) = 1
                                  AND length({0}) >= 2 + get_byte({0}, 1)
                             THEN encode(substring({0} FROM 3 FOR get_byte({0}, 1)), 'escape') ELSE '?' END,
                            count(*)
                     FROM {1} WHERE {0} IS NOT NULL GROUP BY 1 ORDER BY 1",
                    c.name, t.table
                );
                for row in client.query(&sql, &[]).await? {
                    out.push(KeyUsage {
                        column: format!("{}.{}", t.table, c.name),
                        key_id: row.get(0),
                        values: row.get(1),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Plaintext values a migration moved aside that are not sealed yet.
    pub async fn pending_plaintext(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_one("SELECT count(*) FROM plaintext_to_seal", &[])
            .await?
            .get(0))
    }

    /// Seals, in batches, the plaintext values a migration moved to `plaintext_to_seal` into
    /// their columns (run by [`Store::migrate`]); returns how many. Safe to run from several
    /// processes at once (`SKIP LOCKED`).
    pub(crate) async fn seal_pending_plaintext(&self, batch: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let rows = tx
                .query(
                    "SELECT id, tbl, col, locator, place, value FROM plaintext_to_seal
                     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                    &[&batch],
                )
                .await?;
            if rows.is_empty() {
                return Ok(total);
            }
            for row in &rows {
                let id: i64 = row.get(0);
                let (tbl, col): (String, String) = (row.get(1), row.get(2));
                let Some((t, c)) = sealed_column(&tbl, &col) else {
                    return Err(StoreError::Corrupt(format!(
                        "plaintext_to_seal names {tbl}.{col}, which is not a sealed column"
                    )));
                };
                let locator: Vec<String> = row.get(3);
                let place_parts: Vec<String> = row.get(4);
                let value: Vec<u8> = row.get(5);
                if locator.len() != t.key.len() || place_parts.len() != c.row.len() {
                    return Err(StoreError::Corrupt(format!(
                        "plaintext_to_seal row {id} is malformed"
                    )));
                }
                let place_row: Vec<&str> = place_parts.iter().map(String::as_str).collect();
                let sealed = self.keys.seal(&value, &Place::new(c.label, &place_row));
                let update = format!("UPDATE {} SET {} = $1 WHERE {}", t.table, c.name, key_match(t, 2));
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&sealed];
                params.extend(locator.iter().map(|k| k as &(dyn ToSql + Sync)));
                tx.execute(&update, &params).await?;
                tx.execute("DELETE FROM plaintext_to_seal WHERE id = $1", &[&id])
                    .await?;
                total += 1;
            }
            tx.commit().await?;
        }
    }

    /// Opens the sealed value of `table.column` in the row whose primary key is `key` (as text,
    /// in key order). `None` when there is no such row or the value is NULL.
    pub async fn open_sealed(
        &self,
        table: &str,
        column: &str,
        key: &[&str],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (t, c) = sealed_column(table, column)
            .ok_or_else(|| StoreError::Corrupt(format!("{table}.{column} is not a sealed column")))?;
        if key.len() != t.key.len() {
            return Err(StoreError::Corrupt(format!(
                "{table} has a key of {} parts",
                t.key.len()
            )));
        }
        let place_sql: Vec<String> = c.row.iter().map(|r| format!("{r}::text")).collect();
        let sql = format!(
            "SELECT {}, {} FROM {} WHERE {}",
            c.name,
            place_sql.join(", "),
            t.table,
            key_match(t, 1)
        );
        let params: Vec<&(dyn ToSql + Sync)> = key.iter().map(|k| k as &(dyn ToSql + Sync)).collect();
        let client = self.pool.get().await?;
        let Some(row) = client.query_opt(&sql, &params).await? else {
            return Ok(None);
        };
        let Some(value) = row.get::<_, Option<Vec<u8>>>(0) else {
            return Ok(None);
        };
        let parts: Vec<String> = (0..c.row.len()).map(|i| row.get(1 + i)).collect();
        let place_row: Vec<&str> = parts.iter().map(String::as_str).collect();
        let place = Place::new(c.label, &place_row);
        self.keys
            .open(&value, &place)
            .map(Some)
            .map_err(|e| sealed_error(&place, e))
    }

    /// [`Store::open_sealed`] as text.
    pub async fn open_sealed_text(
        &self,
        table: &str,
        column: &str,
        key: &[&str],
    ) -> Result<Option<String>, StoreError> {
        self.open_sealed(table, column, key)
            .await?
            .map(|v| {
                String::from_utf8(v).map_err(|_| StoreError::Sealed {
                    column: format!("{table}.{column}"),
                    source: CryptoError::NotA("text"),
                })
            })
            .transpose()
    }
}
