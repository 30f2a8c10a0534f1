//! `sensitive = true` files never publish the sha256 of their content (hardening item 12): a
//! plan (JSON, saved with --out) or the audit log is read by more people than the secret is,
//! and a plain sha256 would let any of them confirm a guess of it offline. They publish an
//! HMAC under a key that only the store holds instead; the same store shows the same value
//! for the same content, so "changed" and "unchanged" can still be told apart. Real fleets,
//! real stores and the real binary on the local transport.

mod common;

use std::path::Path;

use common::{TestFleet, apply, flotilla, run, signed_fleet};
use flotilla::resolve::sha256_hex;

const SECRET: &str = "hunter2-token\n";
const SECRET_2: &str = "hunter3-token\n";
const PUBLIC: &str = "welcome\n";

fn fleet_with_token(content: &str) -> TestFleet {
    let (f, _keys) = signed_fleet("");
    f.host("hosts/a.toml", "h1", "staging", "");
    write_env(&f, content);
    f.commit("a sensitive token");
    f
}

fn write_env(f: &TestFleet, token: &str) {
    f.write(
        "environments/staging.toml",
        &format!(
            "[runtimes]\ngreeter = \"2.0.0\"\n\n[[file]]\npath = \"/etc/token\"\ncontent = {token:?}\nsensitive = true\n\n[[file]]\npath = \"/etc/motd\"\ncontent = {PUBLIC:?}\n"
        ),
    );
}

fn plan_json(f: &TestFleet, store: &Path) -> (String, serde_json::Value) {
    let r = run(flotilla()
        .arg("--state-dir")
        .arg(store)
        .args(["plan", "--format", "json"])
        .arg(f.path()));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let doc = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    (r.stdout, doc)
}

/// (before, after) of the file change at `path` on h1.
fn file_change(doc: &serde_json::Value, path: &str) -> (serde_json::Value, serde_json::Value) {
    let c = doc["hosts"][0]["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["name"] == path)
        .unwrap_or_else(|| panic!("a change of {path}: {doc:#}"));
    (c["before"].clone(), c["after"].clone())
}

fn new_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    flotilla::store::open(&flotilla::store::Location::Dir(dir.path().to_owned())).expect("store");
    dir
}

#[test]
fn sensitive_files_publish_a_keyed_digest_in_plans_saved_plans_and_the_audit_log() {
    let f = fleet_with_token(SECRET);
    let store = new_store();
    let secret_sha = sha256_hex(SECRET.as_bytes());

    let (text, doc) = plan_json(&f, store.path());
    assert!(
        !text.contains(&secret_sha),
        "the plan publishes the secret's sha256: {text}"
    );
    let (_, keyed) = file_change(&doc, "/etc/token");
    let keyed = keyed.as_str().expect("a digest").to_owned();
    assert!(keyed.starts_with("hmac-sha256:"), "{keyed}");
    // The control: a file that is not sensitive shows its real sha256.
    let (_, public) = file_change(&doc, "/etc/motd");
    assert_eq!(public, sha256_hex(PUBLIC.as_bytes()).as_str());

    // Stable for the store: a second plan shows the same digest.
    let (_, again) = plan_json(&f, store.path());
    assert_eq!(file_change(&again, "/etc/token").1, keyed.as_str());
    // Another store (another key) shows another.
    let other = new_store();
    let (_, elsewhere) = plan_json(&f, other.path());
    assert_ne!(file_change(&elsewhere, "/etc/token").1, keyed.as_str());

    // The key is the store's, private.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(store.path().join("digest-key"))
        .expect("the store's digest key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A saved plan neither publishes the sha256 nor goes stale applying it.
    let saved = store.path().join("saved-plan.json");
    let r = run(flotilla()
        .arg("--state-dir")
        .arg(store.path())
        .args(["plan", "--out"])
        .arg(&saved)
        .arg(f.path()));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let saved_text = std::fs::read_to_string(&saved).unwrap();
    assert!(!saved_text.contains(&secret_sha), "{saved_text}");
    assert!(saved_text.contains(&keyed), "{saved_text}");
    let r = apply(&f, store.path(), &["--plan", saved.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("stale"), "{}", r.stdout);
    assert_eq!(
        std::fs::read_to_string(f.root("h1").join("etc/token")).unwrap(),
        SECRET
    );

    // The secret changes: the update's `before` is the digest published for the old content,
    // and the transaction still checks the host against the real sha256 (it applies).
    write_env(&f, SECRET_2);
    f.commit("rotate the token");
    let (text, doc) = plan_json(&f, store.path());
    let secret_2_sha = sha256_hex(SECRET_2.as_bytes());
    assert!(
        !text.contains(&secret_sha) && !text.contains(&secret_2_sha),
        "{text}"
    );
    let (before, after) = file_change(&doc, "/etc/token");
    assert_eq!(before, keyed.as_str());
    assert!(
        after
            .as_str()
            .is_some_and(|a| a.starts_with("hmac-sha256:") && a != keyed)
    );
    let r = apply(&f, store.path(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read_to_string(f.root("h1").join("etc/token")).unwrap(),
        SECRET_2
    );

    let audit = std::fs::read_to_string(store.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("/etc/token"), "the changes are audited: {audit}");
    for sha in [&secret_sha, &secret_2_sha] {
        assert!(
            !audit.contains(sha.as_str()),
            "the audit log publishes a sha256: {audit}"
        );
    }
    assert!(audit.contains(&keyed), "{audit}");
}
