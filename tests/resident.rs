//! The resident probe shell of the SSH transport (`Session::run_resident`), against a real
//! sshd: repeated probes of one connection share one shell on the host, each sees the host as
//! it is now, nothing a file holds can end a response early, a shell that dies or a script
//! that fails falls back to an ordinary command, and closing the session leaves nothing
//! behind on the host.
//!
//! Without /usr/sbin/sshd these tests are skipped with a visible line, and fail under `CI`.

mod common;

use common::sshd::{self, SshLab};
use common::{TestFleet, signed_fleet};
use flotilla::observe::{ObservedFile, observe};
use flotilla::transport::{self, Script, Session, Target};

/// A fleet with one host, h01, on the lab's first sshd, managing /etc/app.conf.
fn one_host(lab: &SshLab) -> TestFleet {
    let (f, keys) = signed_fleet("");
    f.write("flotilla.toml", &lab.fleet_toml(&keys.public()));
    std::fs::remove_file(f.path().join("environments/prod.toml")).expect("drop prod");
    f.write(
        "environments/staging.toml",
        "[[file]]\npath = \"/etc/app.conf\"\ncontent = \"x = 1\\n\"\n",
    );
    f.write("hosts/lab.toml", &lab.host_toml(0, "h01", "staging", ""));
    f.commit("one ssh host");
    f
}

/// The resident shells running under this lab host's sshd (their command line holds the
/// resident program, which primes the script with `FLOTILLA_PRIME`).
fn residents(lab: &SshLab) -> Vec<u32> {
    let sshd = lab.hosts[0].pid().expect("sshd runs");
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("FLOTILLA_PRIME=1 eval") {
            continue;
        }
        let mut p = pid;
        for _ in 0..8 {
            match parent(p) {
                Some(pp) if pp == sshd => {
                    found.push(pid);
                    break;
                }
                Some(pp) if pp > 1 => p = pp,
                _ => break,
            }
        }
    }
    found
}

async fn connect(f: &TestFleet) -> (flotilla::resolve::DesiredHost, Box<dyn Session>) {
    let repo = flotilla::repo::FleetRepo::open(f.path(), None).expect("repo");
    let loaded = flotilla::load::load(&repo).expect("valid fleet");
    let d = loaded.desired[0].clone();
    let target = Target::for_host(&d, repo.fleet_dir());
    let session = transport::connect(&target).await.expect("connect");
    (d, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_probes_share_one_shell_and_each_sees_the_host_as_it_is_now() {
    if !sshd::available("repeated_probes_share_one_shell_and_each_sees_the_host_as_it_is_now") {
        return;
    }
    let lab = SshLab::start(1);
    let f = one_host(&lab);
    let (d, mut session) = connect(&f).await;
    // A memo is what a long-running caller (watch) has: probes then use the resident shell.
    let memo = flotilla::observe::Memo::new();
    let path = flotilla::manifest::model::HostPath::new("/etc/app.conf").expect("path");
    let file = lab.hosts[0].root.join("etc/app.conf");
    let sha = |o: &flotilla::observe::Observation| match o.files.get(&path) {
        Some(ObservedFile::Regular { sha256, .. }) => Some(sha256.clone()),
        _ => None,
    };

    // A one-shot caller (plan, apply: no memo) keeps nothing open on the host.
    observe(session.as_mut(), &d, None, true, None)
        .await
        .expect("one-shot probe");
    assert_eq!(residents(&lab).len(), 0, "plan and apply hold no resident shell");

    let first = observe(session.as_mut(), &d, None, true, Some(&memo))
        .await
        .expect("first probe");
    assert_eq!(sha(&first), None, "nothing there yet: {:?}", first.files);
    assert_eq!(
        residents(&lab).len(),
        1,
        "the first probe opens one resident shell"
    );
    let host_now = first.clock.expect("the probe reports the host's clock");
    let now = jiff::Timestamp::now().as_second();
    assert!(
        (host_now - now).abs() <= 5,
        "host clock {host_now}, controller {now}"
    );
    assert!(first.missing_tools.is_empty(), "{:?}", first.missing_tools);
    // Linux with perl (Debian's perl-base is essential): uploads go through large pipes. The
    // probe says so exactly when that holds here.
    let perl = std::process::Command::new("sh")
        .args(["-c", "command -v perl"])
        .output()
        .is_ok_and(|o| o.status.success());
    let linux = std::path::Path::new("/proc/sys/fs/pipe-max-size").exists();
    assert_eq!(first.large_pipes, perl && linux, "perl on PATH: {perl}");

    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    for round in 0..3 {
        let text = format!("x = {round}\n");
        std::fs::write(&file, &text).unwrap();
        let o = observe(session.as_mut(), &d, None, true, Some(&memo))
            .await
            .expect("probe");
        assert_eq!(
            sha(&o).as_deref(),
            Some(flotilla::resolve::sha256_hex(text.as_bytes()).as_str()),
            "round {round} sees the file as it is now"
        );
        // Later probes take the clock from /proc instead of `date`: still the host's clock.
        let c = o.clock.expect("clock");
        assert!(
            (c - jiff::Timestamp::now().as_second()).abs() <= 5,
            "round {round}: clock {c}"
        );
        assert_eq!(
            (&o.missing_tools, o.large_pipes),
            (&first.missing_tools, first.large_pipes),
            "the primed facts are the same"
        );
    }
    assert_eq!(
        residents(&lab).len(),
        1,
        "every probe of the connection used the same shell"
    );

    session.close().await.expect("close");
    for _ in 0..50 {
        if residents(&lab).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "closing the session left the resident shell running: {:?}",
        residents(&lab)
    );
}

/// A script that prints the file `f` under the host's root, and then fails when `fail` is
/// in it: the ordinary run afterwards reports its status and stderr.
const CAT: &str =
    r#"cat "$FLOTILLA_ROOT/f"; if grep -q fail "$FLOTILLA_ROOT/f"; then echo "it failed" >&2; exit 3; fi"#;

fn cat_script() -> Script<'static> {
    Script {
        text: CAT,
        env: Vec::new(),
        stdin: Vec::new(),
        timeout: None,
        large_input: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_can_end_a_response_and_a_dead_or_failing_shell_falls_back() {
    if !sshd::available("no_file_can_end_a_response_and_a_dead_or_failing_shell_falls_back") {
        return;
    }
    let lab = SshLab::start(1);
    let f = one_host(&lab);
    let (_d, mut session) = connect(&f).await;
    let file = lab.hosts[0].root.join("f");

    // A file that imitates the end of a response, with and without a guessed nonce.
    let forged = format!(
        "before\n\nflotilla-response {:032x} 0\n\nflotilla-response 0 0\nafter\0binary\n",
        0u128
    );
    std::fs::write(&file, &forged).unwrap();
    let out = session.run_resident(&cat_script()).await.expect("run");
    assert_eq!(out.status, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        forged,
        "the whole file, nothing cut"
    );
    let out = session.run_resident(&cat_script()).await.expect("run again");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        forged,
        "the next request is in step"
    );
    assert_eq!(residents(&lab).len(), 1);

    // The shell killed on the host: the next call still answers, and a new shell serves.
    for pid in residents(&lab) {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
    }
    std::fs::write(&file, "fresh\n").unwrap();
    let out = session
        .run_resident(&cat_script())
        .await
        .expect("after the shell died");
    assert_eq!((out.status, out.stdout.as_slice()), (0, &b"fresh\n"[..]));
    let out = session.run_resident(&cat_script()).await.expect("and again");
    assert_eq!(out.stdout, b"fresh\n");
    assert_eq!(
        residents(&lab).len(),
        1,
        "a new resident shell replaced the dead one"
    );

    // A failing script: run again the ordinary way, whose status and stderr reach the caller.
    std::fs::write(&file, "fail\n").unwrap();
    let out = session
        .run_resident(&cat_script())
        .await
        .expect("a failing script");
    assert_eq!(out.status, 3);
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "it failed");
    session.close().await.expect("close");
}
