//! The connection to PostgreSQL behind [`PgStore`](super::PgStore).
//!
//! The [`Store`](crate::store::Store) trait is synchronous and is called from inside tokio
//! runtimes of both flavours (the CLI's multi-threaded one, tests' current-thread ones). A
//! driver that runs its own runtime on the calling thread would panic there, so the store owns a
//! small runtime of its own (one worker thread) on which every query runs; a caller hands it a
//! query and waits on a plain channel, which works from any thread, inside a runtime or not.
//! The connection future lives on that runtime too, so a connection the server closes is
//! noticed at once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config};

use crate::store::StoreError;

/// How long one store call may take before it is given up (the server or network hangs).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on connecting when the URL sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A `postgres://` URL as given. Its `Display` and `Debug` never show a password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(String);

impl PgUrl {
    /// Accepts `postgres://…` and `postgresql://…` URLs that the driver can read; the error
    /// says what is wrong (without echoing a password).
    pub fn parse(url: &str) -> Result<PgUrl, StoreError> {
        let url = PgUrl(url.to_owned());
        if !(url.0.starts_with("postgres://") || url.0.starts_with("postgresql://")) {
            return Err(StoreError::BadUrl {
                url: url.to_string(),
                problem: "it does not start with postgres:// (for a directory use --state-dir)".to_owned(),
            });
        }
        url.config()?;
        Ok(url)
    }

    /// The driver's reading of the URL.
    pub(super) fn config(&self) -> Result<Config, StoreError> {
        self.0.parse::<Config>().map_err(|e| StoreError::BadUrl {
            url: self.to_string(),
            problem: format!(
                "{e} (the form is postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=require])"
            ),
        })
    }

    /// `user@host:port/database`: what identifies the store's database, password left out.
    pub(super) fn identity(&self) -> String {
        let Ok(c) = self.0.parse::<Config>() else {
            return "unreadable-url".to_owned();
        };
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let user = c.get_user().unwrap_or("");
        let db = c.get_dbname().unwrap_or(user);
        format!("{user}@{host}:{port}/{db}")
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://{}", self.identity())
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

/// A boxed query future borrowing the connection.
pub(super) type Query<'c, T> = Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>>;

/// The store's runtime and its one connection (re-opened when the server closed it).
pub(super) struct Db {
    pub(super) url: PgUrl,
    config: Config,
    runtime: Option<tokio::runtime::Runtime>,
    client: Arc<tokio::sync::Mutex<Option<Client>>>,
}

impl Db {
    /// Starts the runtime and connects; fails with the server's reason.
    pub(super) fn connect(url: &PgUrl) -> Result<Db, StoreError> {
        let mut config = url.config()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // Keepalives notice a dead server or network even on an idle connection.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("flotilla");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flotilla-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database {
                url: url.to_string(),
                action: "start the database client",
                detail: e.to_string(),
            })?;
        let db = Db {
            url: url.clone(),
            config,
            runtime: Some(runtime),
            client: Arc::default(),
        };
        db.call("connect", |_| Box::pin(async { Ok(()) }))?;
        Ok(db)
    }

    /// Opens a new connection (for the lock, which needs a session of its own) on the store's
    /// runtime; the connection is driven there until the client is dropped.
    pub(super) async fn open_session(config: Config) -> Result<Client, tokio_postgres::Error> {
        if config.get_ssl_mode() == SslMode::Require {
            let (client, conn) = config.connect(tls()).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("the database connection ended: {e}");
                }
            });
            Ok(client)
        } else {
            let mut config = config;
            // TLS only when the URL asks for it; "prefer" would need a connector anyway.
            config.ssl_mode(SslMode::Disable);
            let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("the database connection ended: {e}");
                }
            });
            Ok(client)
        }
    }

    pub(super) fn session_config(&self) -> Config {
        self.config.clone()
    }

    pub(super) fn handle(&self) -> &tokio::runtime::Handle {
        // Set in `connect`, taken only in `drop`.
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the Db")
            .handle()
    }

    /// Runs `query` on the connection, waiting for it from any thread. One query at a time per
    /// store (they may be transactions); `action` names it in errors.
    pub(super) fn call<T, F>(&self, action: &'static str, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Client) -> Query<'c, T> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let client = self.client.clone();
        let config = self.config.clone();
        self.handle().spawn(async move {
            let result = tokio::time::timeout(CALL_TIMEOUT, async move {
                let mut slot = client.lock().await;
                if slot.as_ref().is_none_or(Client::is_closed) {
                    *slot = Some(Db::open_session(config).await?);
                }
                let Some(c) = slot.as_mut() else {
                    unreachable!("just connected");
                };
                let result = query(c).await;
                if matches!(&result, Err(e) if e.is_closed()) {
                    *slot = None;
                }
                result
            })
            .await;
            let _ = tx.send(result);
        });
        match blocking(|| rx.recv()) {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(db_error(&self.url, action, &e)),
            Ok(Err(_)) => Err(StoreError::Database {
                url: self.url.to_string(),
                action,
                detail: format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
            }),
            Err(_) => Err(StoreError::Database {
                url: self.url.to_string(),
                action,
                detail: "the database client stopped".to_owned(),
            }),
        }
    }
}

impl Drop for Db {
    /// A runtime may not be dropped (which waits for it) inside another runtime: let it go in
    /// the background instead; its connection closes with it.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Waits for `f` on this thread; on a multi-threaded runtime's worker, tells tokio first so
/// other tasks move to other workers meanwhile.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The TLS connector for `sslmode=require`: the server's certificate is verified against the
/// system's roots (plus Mozilla's), never accepted blindly.
fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            // The ring provider supports the default versions; unreachable in practice.
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// The error as an operator reads it: the server's message and code when it sent one.
pub(super) fn db_error(url: &PgUrl, action: &'static str, e: &tokio_postgres::Error) -> StoreError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            s
        }
    };
    StoreError::Database {
        url: url.to_string(),
        action,
        detail,
    }
}
