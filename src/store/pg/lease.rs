//! The apply lock of a [`PgStore`](super::PgStore): a session-level advisory lock on a
//! connection of its own, with the holder's details in `flotilla_lock_holder`.
//!
//! The server releases the lock when the session ends, however it ends (kill -9 included), so
//! a standby takes over without anyone cleaning up. The session is watched from the store's
//! runtime: a connection that ends, or a keep-alive query that fails or hangs, marks the lease
//! lost at once, and [`LockGuard::lost`] says so to whoever checks before starting a host.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_postgres::Client;

use super::db::{Db, PgUrl, blocking, db_error};
use crate::store::{Holder, LockGuard, StoreError};

/// The advisory lock's key: "flotilla" in ASCII. One store per database.
pub(super) const LOCK_KEY: i64 = 0x666c_6f74_696c_6c61;

/// How often the holder's session is checked with a query, and how long one may take.
const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a refused lock keeps looking for the holder's details (it locked an instant ago
/// and has not written them yet, or is releasing).
const HOLDER_RETRIES: u32 = 20;
const HOLDER_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How long dropping the guard waits for the release to reach the server.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Whether the lease still holds; shared by the guard, the store and the watching task.
#[derive(Debug, Clone, Default)]
pub(super) struct LeaseState(Arc<Mutex<Option<String>>>);

impl LeaseState {
    pub(super) fn lost(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn same(&self, other: &LeaseState) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    fn lose(&self, why: String) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::error!("{why}");
            *slot = Some(why);
        }
    }
}

/// The held lock; dropping it clears the holder row and releases the lock.
#[derive(Debug)]
pub(super) struct PgLock {
    holder: Holder,
    taken_over: Option<Holder>,
    state: LeaseState,
    release: Option<oneshot::Sender<std::sync::mpsc::SyncSender<()>>>,
    /// The store's record of its live guard, cleared when this guard goes.
    slot: Arc<Mutex<Option<LeaseState>>>,
}

impl LockGuard for PgLock {
    fn holder(&self) -> &Holder {
        &self.holder
    }

    fn taken_over(&self) -> Option<&Holder> {
        self.taken_over.as_ref()
    }

    fn lost(&self) -> Option<String> {
        self.state.lost()
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            if slot.as_ref().is_some_and(|s| s.same(&self.state)) {
                *slot = None;
            }
        }
        let Some(release) = self.release.take() else {
            return;
        };
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        if release.send(done_tx).is_ok() {
            // Bounded: a server that does not answer ends the session, which releases too.
            let _ = blocking(|| done_rx.recv_timeout(RELEASE_WAIT));
        }
    }
}

/// What the lock task reports once it tried.
type Acquired = Result<Option<Holder>, StoreError>;

/// Tries the lock once, never waiting for it; `slot` is where the store keeps the live
/// guard's state (for [`Store::lease_lost`](crate::store::Store::lease_lost)).
pub(super) fn acquire(
    db: &Db,
    holder: &Holder,
    slot: &Arc<Mutex<Option<LeaseState>>>,
) -> Result<PgLock, StoreError> {
    let (result_tx, result_rx) = std::sync::mpsc::sync_channel::<Acquired>(1);
    let (release_tx, release_rx) = oneshot::channel();
    let state = LeaseState::default();
    let task_state = state.clone();
    let (config, url, me) = (db.session_config(), db.url.clone(), holder.clone());
    db.handle().spawn(async move {
        let client = match tokio::time::timeout(CHECK_TIMEOUT * 2, Db::open_session(config)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return drop(result_tx.send(Err(db_error(&url, "connect for the store lock", &e)))),
            Err(_) => {
                return drop(result_tx.send(Err(StoreError::Database {
                    url: url.to_string(),
                    action: "connect for the store lock",
                    detail: "no answer in time".to_owned(),
                })));
            }
        };
        match take(&client, &url, &me).await {
            Ok(taken_over) => {
                if result_tx.send(Ok(taken_over)).is_err() {
                    // The caller gave up waiting: let the lock go with the session.
                    return;
                }
                hold(client, url, task_state, release_rx).await;
            }
            Err(e) => drop(result_tx.send(Err(e))),
        }
    });
    let taken_over = blocking(|| result_rx.recv()).map_err(|_| StoreError::Database {
        url: db.url.to_string(),
        action: "take the store lock",
        detail: "the database client stopped".to_owned(),
    })??;
    if let Some(dead) = &taken_over {
        tracing::warn!(
            store = %db.url,
            "taking over the store lock left by {dead}, which is no longer running; its apply was interrupted"
        );
    }
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(state.clone());
    Ok(PgLock {
        holder: holder.clone(),
        taken_over,
        state,
        release: Some(release_tx),
        slot: slot.clone(),
    })
}

/// Takes the advisory lock and records `me` as the holder; returns the holder a dead process
/// left behind, if any. Refused: names the live holder.
async fn take(client: &Client, url: &PgUrl, me: &Holder) -> Result<Option<Holder>, StoreError> {
    let err = |action| move |e: tokio_postgres::Error| db_error(url, action, &e);
    let mut attempt = 0;
    loop {
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(err("take the store lock"))?
            .get(0);
        if got {
            break;
        }
        // Held: name the holder, whose row is the one written by a session holding the lock.
        let row = client
            .query_opt(
                "SELECT pid, machine, \"user\", command, since FROM flotilla_lock_holder h \
                 WHERE EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
                 AND l.pid = h.backend_pid)",
                &[],
            )
            .await
            .map_err(err("read the store lock's holder"))?;
        if let Some(r) = row {
            return Err(StoreError::LeaseHeld {
                url: url.to_string(),
                holder: Some(Box::new(holder_of(&r))),
            });
        }
        attempt += 1;
        if attempt >= HOLDER_RETRIES {
            return Err(StoreError::LeaseHeld {
                url: url.to_string(),
                holder: None,
            });
        }
        tokio::time::sleep(HOLDER_RETRY_PAUSE).await;
    }
    // Ours. A row left in the table belongs to a holder whose session died.
    let previous = client
        .query_opt(
            "SELECT pid, machine, \"user\", command, since FROM flotilla_lock_holder",
            &[],
        )
        .await
        .map_err(err("read the store lock's holder"))?
        .map(|r| holder_of(&r));
    client
        .execute(
            "INSERT INTO flotilla_lock_holder (backend_pid, pid, machine, \"user\", command, since) \
             VALUES (pg_backend_pid(), $1, $2, $3, $4, $5) ON CONFLICT (one) DO UPDATE SET \
             backend_pid = excluded.backend_pid, pid = excluded.pid, machine = excluded.machine, \
             \"user\" = excluded.\"user\", command = excluded.command, since = excluded.since",
            &[&i64::from(me.pid), &me.machine, &me.user, &me.command, &me.since],
        )
        .await
        .map_err(err("record the store lock's holder"))?;
    Ok(previous)
}

fn holder_of(r: &tokio_postgres::Row) -> Holder {
    let pid: i64 = r.get(0);
    Holder {
        pid: u32::try_from(pid).unwrap_or(0),
        machine: r.get(1),
        user: r.get(2),
        command: r.get(3),
        since: r.get(4),
    }
}

/// Keeps the session alive and watched until the guard is dropped (then clears the holder and
/// unlocks) or the session is lost (then says so).
async fn hold(
    client: Client,
    url: PgUrl,
    state: LeaseState,
    mut release: oneshot::Receiver<std::sync::mpsc::SyncSender<()>>,
) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            done = &mut release => {
                let _ = client.execute("DELETE FROM flotilla_lock_holder WHERE backend_pid = pg_backend_pid()", &[]).await;
                let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
                drop(client);
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
            _ = tick.tick() => {
                let why = match tokio::time::timeout(CHECK_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => format!("the database session holding the store lock of {url} was lost ({e}): this process no longer holds the lock and starts no more hosts"),
                    Err(_) => format!("the database session holding the store lock of {url} did not answer for {}s: this process no longer counts on the lock and starts no more hosts", CHECK_TIMEOUT.as_secs()),
                };
                state.lose(why);
                // Wait for the guard to go; the session (if any) ends with the client.
                drop(client);
                if let Ok(done) = release.await {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
}
