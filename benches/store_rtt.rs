//! Benchmark: the store's round trips as an apply makes them: one audit append (durable when
//! it returns), a batch of 100 appends (one per host of a wave), taking and releasing the apply
//! lock, and taking an epoch. Runs against the directory store always, and against PostgreSQL
//! when `FLOTILLA_TEST_POSTGRES` names a server (`source .ci/postgres.sh` starts one): a
//! database is made for the run and dropped after. Prints the median and p90 of each.
//!
//! Run: `cargo bench --bench store_rtt` (add `-- --rounds 500` for more samples).

use std::time::{Duration, Instant};

use flotilla::store::{AuditEvent, Holder, Location, Store};

fn stats(mut samples: Vec<Duration>) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    format!("median {:>9.3} ms   p90 {:>9.3} ms", ms(at(0.5)), ms(at(0.9)))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn time(rounds: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn bench(name: &str, store: &dyn Store, rounds: usize) {
    let event = |i: usize| {
        let mut e = AuditEvent::new(jiff::Timestamp::now(), "bench@host", "host-applied");
        e.environment = Some("prod".into());
        e.host = Some(format!("web-{i:05}"));
        e.changes = vec![serde_json::json!({"kind": "runtime", "name": "python", "after": "3.12"})];
        e
    };
    let wave: Vec<AuditEvent> = (0..100).map(event).collect();
    let holder = Holder::this_process("flotilla bench", jiff::Timestamp::now());
    println!("{name}");
    println!(
        "  audit append (1 event)      {}",
        stats(time(rounds, || store.append_audit(&event(0)).unwrap()))
    );
    println!(
        "  audit append (100 events)   {}",
        stats(time(rounds / 5 + 1, || store.append_audit_all(&wave).unwrap()))
    );
    println!(
        "  lock + release              {}",
        stats(time(rounds, || drop(store.lock(&holder).unwrap())))
    );
    println!(
        "  next epoch                  {}",
        stats(time(rounds, || {
            store.next_epoch().unwrap();
        }))
    );
    // A rollout's per-host record: appended, so its cost does not grow with the hosts already
    // changed (the record is saved once, then 10,000 hosts are appended and read back).
    let record = flotilla::store::RolloutRecord {
        revision: None,
        desired: Some("bench".into()),
        waves: vec![Vec::new()],
        waves_done: 0,
        bake_deadline: None,
        halted: None,
        halted_wave: None,
        halted_at: None,
        started_at: jiff::Timestamp::now(),
        ended_at: None,
        changed: Vec::new(),
    };
    store.save_rollout("bench", &record).unwrap();
    let mut i = 0;
    let mut host = || {
        i += 1;
        flotilla::store::ChangedHost {
            host: format!("web-{i:05}"),
            wave: 1,
            txn: format!("1-{i:08x}"),
        }
    };
    let first = time(rounds, || store.rollout_host_changed("bench", &host()).unwrap());
    for _ in rounds..9_900 {
        store.rollout_host_changed("bench", &host()).unwrap();
    }
    let last = time(100, || store.rollout_host_changed("bench", &host()).unwrap());
    println!("  rollout host changed, first {rounds:>4} {}", stats(first));
    println!("  rollout host changed, 9,900+ {}", stats(last));
    let read = time(5, || {
        assert_eq!(store.rollout("bench").unwrap().unwrap().changed.len(), 10_000);
    });
    println!("  read the record (10,000)    {}", stats(read));
    // What each host cost before hosts were appended: the whole record, rewritten.
    let full = store.rollout("bench").unwrap().unwrap();
    let rewrite = time(5, || store.save_rollout("bench-rewrite", &full).unwrap());
    println!("  (before) rewrite it, 10,000 {}", stats(rewrite));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let store = flotilla::store::open(&Location::Dir(dir.path().join("state"))).unwrap();
    bench("directory store", &*store, rounds);

    let Some(admin) = std::env::var("FLOTILLA_TEST_POSTGRES")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        println!(
            "PostgreSQL: skipped (set FLOTILLA_TEST_POSTGRES; `source .ci/postgres.sh` starts a server)"
        );
        return;
    };
    let name = format!("flotilla_bench_{:016x}", rand::random::<u64>());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sql = |s: String| {
        rt.block_on(async {
            let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .unwrap();
            let task = tokio::spawn(conn);
            c.simple_query(&s).await.unwrap();
            drop(c);
            let _ = task.await;
        })
    };
    sql(format!("CREATE DATABASE {name}"));
    let url = format!("{}/{name}", &admin[..admin.rfind('/').unwrap()]);
    {
        let store = flotilla::store::open(&Location::parse_url(&url).unwrap()).unwrap();
        bench("PostgreSQL store (loopback)", &*store, rounds);
    }
    sql(format!("DROP DATABASE {name} WITH (FORCE)"));
}
