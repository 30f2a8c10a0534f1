//! Real PostgreSQL for the tests: `.ci/postgres.sh` starts a throwaway cluster and exports its
//! URL in `FLOTILLA_TEST_POSTGRES`; each test makes a database of its own (a random name) so
//! tests run in parallel, and drops it at the end. Without the variable a test skips visibly
//! (and fails under CI, see [`super::skip`]).

/// The variable holding the server's URL (a superuser's, database `postgres`).
pub const ENV: &str = "FLOTILLA_TEST_POSTGRES";

/// A database of one test's own; dropped (with any sessions still in it) on drop.
pub struct TestDb {
    admin: String,
    pub name: String,
    pub url: String,
}

/// A fresh database, or `None` after a visible skip when no server is configured.
#[track_caller]
pub fn database(test: &str) -> Option<TestDb> {
    let Some(admin) = std::env::var(ENV).ok().filter(|v| !v.is_empty()) else {
        super::skip(
            test,
            &format!("no PostgreSQL: set {ENV} (`source .ci/postgres.sh` starts a throwaway server)"),
        );
        return None;
    };
    let name = format!("flotilla_test_{:016x}", rand::random::<u64>());
    admin_sql(&admin, &format!("CREATE DATABASE {name}"));
    let url = match admin.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{name}", &admin[..i]),
        _ => panic!("{ENV}={admin} should end in /DATABASE"),
    };
    Some(TestDb { admin, name, url })
}

impl TestDb {
    /// Runs SQL in this database as the superuser (to look behind the store's back).
    pub fn sql(&self, statements: &str) -> Vec<Vec<Option<String>>> {
        admin_sql(&self.url, statements)
    }

    /// Ends every session but the caller's in this database (as a server restart or a cut
    /// network would), and waits until they are gone.
    pub fn terminate_sessions(&self) {
        admin_sql(
            &self.admin,
            &format!(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            ),
        );
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        admin_sql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` (one or more statements) with the simple query protocol; the rows as text.
pub fn admin_sql(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let url = url.to_owned();
    let sql = sql.to_owned();
    // On a thread of its own: the caller may be inside a runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
            tokio::spawn(conn);
            let messages = client
                .simple_query(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                    }
                    _ => None,
                })
                .collect()
        })
    })
    .join()
    .expect("admin SQL thread")
}
