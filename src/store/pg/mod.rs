//! [`PgStore`]: the store served by PostgreSQL (DESIGN §7), for a team of operators and CI
//! runners sharing one fleet, and for `watch` replicas with one leader.
//!
//! One database holds one store. The apply lock is a session-level advisory lock held on a
//! connection of its own (see [`lease`]); the server releases it when that session ends, so a
//! process that dies holding it needs no clean-up, and a process that loses its session loses
//! the lock at once (its guard reports it). Everything else is a table (see [`schema`]);
//! artifact bytes and `watch`'s mirror stay in a local cache directory
//! ([`cache_dir`]), since Git and tar read them as files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_postgres::Client;

use super::{
    Approval, AuditEvent, AuditFilter, DigestKey, Holder, LockGuard, Observation, Pause, PromotionRecord,
    RolloutRecord, Store, StoreError, check_file_name,
};

mod copy;
mod db;
mod lease;
mod schema;

pub use copy::CopySummary;
pub use db::PgUrl;
use db::{Db, Query};

/// The store kept in a PostgreSQL database.
pub struct PgStore {
    db: Db,
    id: String,
    cache: PathBuf,
    /// What the lock guard this store handed out says about its session, while it lives.
    lease: Arc<Mutex<Option<lease::LeaseState>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.db.url)
            .field("id", &self.id)
            .finish()
    }
}

/// The local directory for artifact bytes and `watch`'s mirror of a PostgreSQL store:
/// `$XDG_CACHE_HOME/flotilla/postgres-<16 hex>` (else `~/.cache/…`, else `/var/cache/…`), the
/// hex a digest of `user@host:port/database`. Known without connecting, since `validate` and
/// `plan` remember checked artifacts before any store exists.
pub fn cache_dir(url: &PgUrl) -> PathBuf {
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let base = absolute(std::env::var_os("XDG_CACHE_HOME"))
        .or_else(|| absolute(std::env::var_os("HOME")).map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("flotilla").join(cache_name(url))
}

fn cache_name(url: &PgUrl) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(url.identity().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("postgres-{hex}")
}

fn encode<T: serde::Serialize>(url: &PgUrl, value: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::Database {
        url: url.to_string(),
        action: "encode a record",
        detail: e.to_string(),
    })
}

impl PgStore {
    /// Connects, creating or migrating the schema (and the store's id) on first use. A database
    /// whose schema is newer than this binary's is refused.
    pub fn open(url: &PgUrl) -> Result<PgStore, StoreError> {
        Self::connect(url, true)?.ok_or_else(|| unreachable_none(url))
    }

    /// Like [`PgStore::open`], but `None` when the database holds no store yet (nothing is
    /// created: commands that only read never make one).
    pub fn open_existing(url: &PgUrl) -> Result<Option<PgStore>, StoreError> {
        Self::connect(url, false)
    }

    /// Opens the store with a given id (creating it with that id when the database has none):
    /// `flotilla store copy` keeps a store's id, so hosts do not refuse it.
    pub fn open_with_id(url: &PgUrl, id: &str) -> Result<PgStore, StoreError> {
        let db = Db::connect(url)?;
        let wanted = id.to_owned();
        let found = db.call("create the store", move |c| {
            Box::pin(async move { migrate(c, Some(&wanted), true).await })
        })?;
        Self::finish(db, found.ok_or_else(|| unreachable_none(url))?)
    }

    fn connect(url: &PgUrl, create: bool) -> Result<Option<PgStore>, StoreError> {
        let db = Db::connect(url)?;
        let found = db.call(
            if create {
                "create or migrate the store schema"
            } else {
                "read the store schema"
            },
            move |c| Box::pin(async move { migrate(c, None, create).await }),
        )?;
        match found {
            Some(Ok(id)) => Self::finish(db, Ok(id)).map(Some),
            Some(Err(newer)) => Err(StoreError::NewerSchema {
                url: url.to_string(),
                found: newer,
                supported: schema::VERSION,
            }),
            None => Ok(None),
        }
    }

    fn finish(db: Db, id: Result<String, i32>) -> Result<PgStore, StoreError> {
        let id = id.map_err(|found| StoreError::NewerSchema {
            url: db.url.to_string(),
            found,
            supported: schema::VERSION,
        })?;
        let cache = cache_dir(&db.url);
        let artifacts = cache.join("artifacts");
        std::fs::create_dir_all(&artifacts).map_err(|source| StoreError::CreateDir {
            dir: artifacts.clone(),
            source,
        })?;
        Ok(PgStore {
            db,
            id,
            cache,
            lease: Arc::default(),
        })
    }

    /// The local cache directory (artifacts, `watch`'s mirror).
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    fn call<T, F>(&self, action: &'static str, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Client) -> Query<'c, T> + Send + 'static,
    {
        self.db.call(action, query)
    }

    fn corrupt(&self, what: &str, e: serde_json::Error, fix: &'static str) -> StoreError {
        StoreError::Corrupt {
            path: PathBuf::from(self.db.url.to_string()),
            problem: format!("{what} is not valid: {e}"),
            fix,
        }
    }
}

fn unreachable_none(url: &PgUrl) -> StoreError {
    StoreError::Database {
        url: url.to_string(),
        action: "create the store",
        detail: "the store row is missing after creating it".to_owned(),
    }
}

/// Brings the schema up to date (when `create`) and returns the store id: `None` when there
/// is no store and `create` is false, `Some(Err(version))` for a schema newer than this
/// binary. `id` is the id to give a store created now (random otherwise).
async fn migrate(
    c: &mut Client,
    id: Option<&str>,
    create: bool,
) -> Result<Option<Result<String, i32>>, tokio_postgres::Error> {
    if !create {
        let exists: bool = c
            .query_one("SELECT to_regclass('flotilla_store') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let version: Option<i32> = c
            .query_one("SELECT max(version) FROM flotilla_schema", &[])
            .await?
            .get(0);
        if let Some(v) = version.filter(|v| *v > schema::VERSION) {
            return Ok(Some(Err(v)));
        }
        let row = c.query_opt("SELECT id FROM flotilla_store", &[]).await?;
        return Ok(row.map(|r| Ok(r.get(0))));
    }
    let tx = c.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::MIGRATION_LOCK])
        .await?;
    tx.batch_execute(schema::VERSION_TABLE).await?;
    let version: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM flotilla_schema", &[])
        .await?
        .get(0);
    if version > schema::VERSION {
        return Ok(Some(Err(version)));
    }
    for (i, migration) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(migration).await?;
        tx.execute(
            "INSERT INTO flotilla_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    let new_id = id
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    tx.execute(
        "INSERT INTO flotilla_store (id) VALUES ($1) ON CONFLICT (one) DO NOTHING",
        &[&new_id],
    )
    .await?;
    let id: String = tx.query_one("SELECT id FROM flotilla_store", &[]).await?.get(0);
    tx.commit().await?;
    Ok(Some(Ok(id)))
}

const ROLLOUT_FIX: &str = "fix the record with SQL (table flotilla_rollouts), or delete its row to forget this rollout (the next apply starts a new one, with a new wave layout)";
const RECORDS_FIX: &str = "fix the row with SQL, or delete it";

/// The pause table's key for a scope: the environment, or "" for the whole fleet (no
/// environment name is empty).
fn scope_key(environment: Option<&str>) -> String {
    environment.unwrap_or("").to_owned()
}

impl Store for PgStore {
    fn id(&self) -> &str {
        &self.id
    }

    fn lock(&self, holder: &Holder) -> Result<Box<dyn LockGuard>, StoreError> {
        Ok(Box::new(lease::acquire(&self.db, holder, &self.lease)?))
    }

    fn lease_lost(&self) -> Option<String> {
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        lease.as_ref().and_then(lease::LeaseState::lost)
    }

    fn next_epoch(&self) -> Result<u64, StoreError> {
        let epoch: i64 = self.call("take the next epoch", |c| {
            Box::pin(async move {
                let row = c
                    .query_one("UPDATE flotilla_store SET epoch = epoch + 1 RETURNING epoch", &[])
                    .await?;
                Ok(row.get(0))
            })
        })?;
        Ok(epoch as u64)
    }

    fn append_audit_all(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.call("append to the audit log", move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let insert = tx
                    .prepare(
                        "INSERT INTO flotilla_audit (time, time_nanos, actor, revision, dirty, environment, host, event, changes, error, reason) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .await?;
                for e in &events {
                    let changes = serde_json::Value::Array(e.changes.clone());
                    // PostgreSQL keeps microseconds; the rest goes beside, so nothing is lost.
                    let nanos = e.time.subsec_nanosecond().rem_euclid(1000);
                    tx.execute(
                        &insert,
                        &[
                            &(e.time - jiff::SignedDuration::from_nanos(i64::from(nanos))),
                            &nanos,
                            &e.actor,
                            &e.revision,
                            &e.dirty,
                            &e.environment,
                            &e.host,
                            &e.event,
                            &changes,
                            &e.error,
                            &e.reason,
                        ],
                    )
                    .await?;
                }
                tx.commit().await
            })
        })
    }

    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let filter = filter.clone();
        let limit = filter.limit.map(|n| n.min(i64::MAX as usize) as i64);
        self.call("read the audit log", move |c| {
            Box::pin(async move {
                // The newest N matching, returned oldest first.
                let rows = c
                    .query(
                        "SELECT * FROM (SELECT seq, time, time_nanos, actor, revision, dirty, environment, host, event, changes, error, reason \
                         FROM flotilla_audit WHERE ($1::text IS NULL OR host = $1) AND ($2::text IS NULL OR environment = $2) \
                         ORDER BY seq DESC LIMIT $3) newest ORDER BY seq",
                        &[&filter.host, &filter.env, &limit],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| {
                        let changes: serde_json::Value = r.get("changes");
                        let time: jiff::Timestamp = r.get("time");
                        let nanos: i32 = r.get("time_nanos");
                        AuditEvent {
                            time: time + jiff::SignedDuration::from_nanos(i64::from(nanos)),
                            actor: r.get("actor"),
                            revision: r.get("revision"),
                            dirty: r.get("dirty"),
                            environment: r.get("environment"),
                            host: r.get("host"),
                            event: r.get("event"),
                            changes: match changes {
                                serde_json::Value::Array(a) => a,
                                other => vec![other],
                            },
                            error: r.get("error"),
                            reason: r.get("reason"),
                        }
                    })
                    .collect())
            })
        })
    }

    fn save_observation(&self, host: &str, fingerprint: &str, at: jiff::Timestamp) -> Result<(), StoreError> {
        check_file_name("host", host)?;
        let (host, fingerprint) = (host.to_owned(), fingerprint.to_owned());
        self.call("save an observation", move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO flotilla_observations (host, fingerprint, at) VALUES ($1, $2, $3) \
                     ON CONFLICT (host) DO UPDATE SET fingerprint = excluded.fingerprint, at = excluded.at",
                    &[&host, &fingerprint, &at],
                )
                .await
                .map(drop)
            })
        })
    }

    fn observation(&self, host: &str) -> Result<Option<Observation>, StoreError> {
        check_file_name("host", host)?;
        let host = host.to_owned();
        self.call("read an observation", move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT fingerprint, at FROM flotilla_observations WHERE host = $1",
                        &[&host],
                    )
                    .await?;
                Ok(row.map(|r| Observation {
                    host,
                    fingerprint: r.get(0),
                    at: r.get(1),
                }))
            })
        })
    }

    fn known_hosts(&self) -> Result<Vec<String>, StoreError> {
        self.call("list the observed hosts", |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT host FROM flotilla_observations ORDER BY host COLLATE \"C\"",
                        &[],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
        })
    }

    fn save_rollout(&self, env: &str, record: &RolloutRecord) -> Result<(), StoreError> {
        check_file_name("environment", env)?;
        let (env, record) = (env.to_owned(), encode(&self.db.url, record)?);
        self.call("save a rollout record", move |c| {
            Box::pin(async move {
                // The record now holds every host: the appended rows go with it, atomically.
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO flotilla_rollouts (environment, record) VALUES ($1, $2) \
                     ON CONFLICT (environment) DO UPDATE SET record = excluded.record, updated_at = now()",
                    &[&env, &record],
                )
                .await?;
                tx.execute(
                    "DELETE FROM flotilla_rollout_changed WHERE environment = $1",
                    &[&env],
                )
                .await?;
                tx.commit().await
            })
        })
    }

    fn rollout(&self, env: &str) -> Result<Option<RolloutRecord>, StoreError> {
        check_file_name("environment", env)?;
        let env = env.to_owned();
        type Read = Option<(serde_json::Value, Vec<serde_json::Value>)>;
        let value: Read = self.call("read a rollout record", move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "SELECT record FROM flotilla_rollouts WHERE environment = $1",
                        &[&env],
                    )
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let appended = c
                    .query(
                        "SELECT host FROM flotilla_rollout_changed WHERE environment = $1 ORDER BY seq",
                        &[&env],
                    )
                    .await?;
                Ok(Some((row.get(0), appended.iter().map(|r| r.get(0)).collect())))
            })
        })?;
        let Some((record, appended)) = value else {
            return Ok(None);
        };
        let mut record: RolloutRecord =
            serde_json::from_value(record).map_err(|e| self.corrupt("the rollout record", e, ROLLOUT_FIX))?;
        let hosts = appended
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok());
        crate::store::merge_changed(&mut record, hosts);
        Ok(Some(record))
    }

    fn rollout_host_changed(&self, env: &str, host: &crate::store::ChangedHost) -> Result<(), StoreError> {
        check_file_name("environment", env)?;
        let (env, host) = (env.to_owned(), encode(&self.db.url, host)?);
        self.call("record a host a rollout changed", move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO flotilla_rollout_changed (environment, host) VALUES ($1, $2)",
                    &[&env, &host],
                )
                .await
                .map(drop)
            })
        })
    }

    fn artifact_cache_dir(&self) -> PathBuf {
        self.cache.join("artifacts")
    }

    fn record_promotion(&self, record: &PromotionRecord) -> Result<(), StoreError> {
        let record = encode(&self.db.url, record)?;
        self.call("record a promotion", move |c| {
            Box::pin(async move {
                c.execute("INSERT INTO flotilla_promotions (record) VALUES ($1)", &[&record])
                    .await
                    .map(drop)
            })
        })
    }

    fn promotions(&self) -> Result<Vec<PromotionRecord>, StoreError> {
        let values: Vec<serde_json::Value> = self.call("read the promotion records", |c| {
            Box::pin(async move {
                let rows = c
                    .query("SELECT record FROM flotilla_promotions ORDER BY seq", &[])
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
        })?;
        values
            .into_iter()
            .map(|v| {
                serde_json::from_value(v).map_err(|e| self.corrupt("a promotion record", e, RECORDS_FIX))
            })
            .collect()
    }

    fn digest_key(&self) -> Result<DigestKey, StoreError> {
        let fresh = DigestKey::random().to_hex();
        let text: String = self.call("read the digest key", move |c| {
            Box::pin(async move {
                // Created on first use; a concurrent first use keeps the key written first.
                c.execute(
                    "UPDATE flotilla_store SET digest_key = $1 WHERE digest_key IS NULL",
                    &[&fresh],
                )
                .await?;
                Ok(c.query_one("SELECT digest_key FROM flotilla_store", &[])
                    .await?
                    .get(0))
            })
        })?;
        DigestKey::from_hex(&text).ok_or_else(|| StoreError::Corrupt {
            path: PathBuf::from(self.db.url.to_string()),
            problem: "the digest key (flotilla_store.digest_key) is not 64 hexadecimal digits".to_owned(),
            fix: "set it to NULL: a new key is made on the next run (published digests of sensitive files then change once)",
        })
    }

    fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        let values: Vec<serde_json::Value> = self.call("read the pauses", |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT record FROM flotilla_pauses ORDER BY scope COLLATE \"C\"",
                        &[],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
        })?;
        let mut pauses = Vec::new();
        for v in values {
            let pause: Pause = serde_json::from_value(v).map_err(|e| {
                self.corrupt(
                    "a pause (table flotilla_pauses)",
                    e,
                    "fix the row with SQL, or delete it to lift that pause",
                )
            })?;
            super::set_pause(&mut pauses, pause);
        }
        Ok(pauses)
    }

    fn pause(&self, pause: &Pause) -> Result<(), StoreError> {
        let scope = scope_key(pause.environment.as_deref());
        let record = encode(&self.db.url, pause)?;
        self.call("record a pause", move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO flotilla_pauses (scope, record) VALUES ($1, $2) \
                     ON CONFLICT (scope) DO UPDATE SET record = excluded.record",
                    &[&scope, &record],
                )
                .await
                .map(drop)
            })
        })
    }

    fn resume(&self, environment: Option<&str>) -> Result<Option<Pause>, StoreError> {
        let scope = scope_key(environment);
        let value: Option<serde_json::Value> = self.call("lift a pause", move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        "DELETE FROM flotilla_pauses WHERE scope = $1 RETURNING record",
                        &[&scope],
                    )
                    .await?;
                Ok(row.map(|r| r.get(0)))
            })
        })?;
        // A row that cannot be read was lifted all the same; say what it was as best we can.
        Ok(value.map(|v| {
            serde_json::from_value(v.clone()).unwrap_or_else(|_| Pause {
                environment: environment.map(str::to_owned),
                reason: v.to_string(),
                actor: "unknown".to_owned(),
                since: jiff::Timestamp::UNIX_EPOCH,
            })
        }))
    }

    fn approvals(&self) -> Result<BTreeMap<String, Approval>, StoreError> {
        let rows: Vec<(String, serde_json::Value)> = self.call("read the approvals", |c| {
            Box::pin(async move {
                let rows = c
                    .query("SELECT environment, record FROM flotilla_approvals", &[])
                    .await?;
                Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            })
        })?;
        rows.into_iter()
            .map(|(env, v)| {
                let approval = serde_json::from_value(v).map_err(|e| {
                    self.corrupt(
                        "an approval (table flotilla_approvals)",
                        e,
                        "fix the row with SQL, or delete it (watch then waits for a person's apply there)",
                    )
                })?;
                Ok((env, approval))
            })
            .collect()
    }

    fn approve(&self, env: &str, approval: &Approval) -> Result<(), StoreError> {
        check_file_name("environment", env)?;
        let (env, record) = (env.to_owned(), encode(&self.db.url, approval)?);
        self.call("record an approval", move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO flotilla_approvals (environment, record) VALUES ($1, $2) \
                     ON CONFLICT (environment) DO UPDATE SET record = excluded.record",
                    &[&env, &record],
                )
                .await
                .map(drop)
            })
        })
    }
}
