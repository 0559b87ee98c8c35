//! Breaks 7 and 8: symlinks planted in the state dir, a state dir of another user, and
//! files created 0644 (0666 under umask 000).

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::time::Duration;

use super::support::{TestEnv, wait_for};
use super::{orch_with_umask, session_dir, stderr, walk};

const LAYOUT: &str =
    "session: f\nagents:\n  - { name: a0, role: WORKER, command: 'echo hello; exec sleep 600' }\n";

/// A file outside the state dir that links point at, and what it held.
struct Bait {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Bait {
    fn new(name: &str) -> Bait {
        let dir = tempfile::tempdir().expect("bait dir");
        let path = dir.path().join(name);
        std::fs::write(&path, "bait\n").expect("bait");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        Bait { _dir: dir, path }
    }

    fn untouched(&self) -> bool {
        let meta = std::fs::metadata(&self.path).expect("bait meta");
        std::fs::read_to_string(&self.path).expect("read bait") == "bait\n"
            && meta.permissions().mode() & 0o777 == 0o644
    }
}

#[test]
fn links_planted_in_the_session_dir_are_never_written_through() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    let dir = session_dir(&env, "f");
    std::fs::create_dir_all(dir.join("transcripts")).expect("mkdir");
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let files = [
        "transcripts/a0.log".to_owned(),
        "events.jsonl".to_owned(),
        "audit.jsonl".to_owned(),
        format!("orch.{}.log", &date[..10]),
    ];
    let baits: Vec<Bait> = files
        .iter()
        .map(|f| Bait::new(f.replace('/', "_").as_str()))
        .collect();
    for (f, b) in files.iter().zip(&baits) {
        symlink(&b.path, dir.join(f)).expect("plant link");
    }
    let queue_bait = tempfile::tempdir().expect("queue bait");
    std::fs::create_dir_all(dir.join("queue")).expect("mkdir queue");
    symlink(queue_bait.path(), dir.join("queue/a0")).expect("plant queue link");
    let snap_bait = tempfile::tempdir().expect("snapshot bait");
    symlink(snap_bait.path(), dir.join("snapshots")).expect("plant snapshots link");

    // Up works (the agent runs, without a transcript); each link is reported, not used.
    env.orch_ok(&["layout", "up"]);
    wait_for("a0 running", Duration::from_secs(10), || {
        env.panes("f").first().filter(|p| !p.dead).map(|_| ())
    });
    let send = env.orch(&["send", "a0", "hi"]);
    assert!(
        !send.status.success(),
        "send through a linked queue must fail"
    );
    assert!(stderr(&send).contains("symbolic link"), "{}", stderr(&send));
    let snap = env.orch(&["snapshot"]);
    assert!(!snap.status.success());
    assert!(stderr(&snap).contains("symbolic link"), "{}", stderr(&snap));
    let sup = env.orch(&["supervise"]);
    assert!(!sup.status.success());
    assert!(stderr(&sup).contains("symbolic link"), "{}", stderr(&sup));

    for (f, b) in files.iter().zip(&baits) {
        assert!(
            b.untouched(),
            "{f}: its link's target was written or chmodded"
        );
    }
    assert_eq!(
        std::fs::read_dir(queue_bait.path()).expect("dir").count(),
        0
    );
    assert_eq!(std::fs::read_dir(snap_bait.path()).expect("dir").count(), 0);
}

#[test]
fn a_linked_or_foreign_state_dir_or_session_dir_is_refused_with_what_to_do() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    let real = tempfile::tempdir().expect("real");
    std::fs::set_permissions(real.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // The session dir is a link.
    symlink(real.path(), session_dir(&env, "f")).expect("link");
    let out = env.orch(&["layout", "up"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("symbolic link") && err.contains("--state-dir"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert!(!env.session_exists("f"), "nothing was started");
    assert_eq!(
        std::fs::metadata(real.path())
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o755,
        "the link's target is not chmodded"
    );
    std::fs::remove_file(session_dir(&env, "f")).expect("unlink");

    // The whole state dir is a link.
    let linked_state = env.home.path().join("state-link");
    symlink(real.path(), &linked_state).expect("link");
    let out = env
        .orch_command(&["layout", "up"])
        .env("ORCH_STATE_DIR", &linked_state)
        .output()
        .expect("orch");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));

    // The session dir belongs to another user (doctor says so too).
    if rustix::process::geteuid().is_root() {
        let dir = session_dir(&env, "f");
        std::fs::create_dir(&dir).expect("mkdir");
        std::os::unix::fs::chown(&dir, Some(4242), Some(4242)).expect("chown");
        let out = env.orch(&["layout", "up"]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.contains("another user") && err.contains("--state-dir"),
            "{err}"
        );
        assert!(!env.session_exists("f"));
        assert_eq!(std::fs::metadata(&dir).expect("meta").uid(), 4242);
        let doctor = env.orch(&["doctor"]);
        assert!(String::from_utf8_lossy(&doctor.stdout).contains("another user"));
    }
}

#[test]
fn under_umask_000_every_file_is_0600_and_every_folder_0700() {
    let env = TestEnv::new();
    env.write("orch.yaml", LAYOUT);
    for args in [
        &["layout", "up"][..],
        &["send", "a0", "hello there"],
        &["snapshot"],
    ] {
        let out = orch_with_umask(&env, "000", args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    // The restore's replay marker is created by the pane's own shell, also under 000.
    env.kill_server();
    wait_for("the old server gone", Duration::from_secs(10), || {
        (!env.session_exists("f")).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let out = orch_with_umask(&env, "000", &["restore", "latest", "--no-handover"]);
    assert!(out.status.success(), "restore: {}", stderr(&out));
    let dir = session_dir(&env, "f");
    let marker = wait_for("the replay marker", Duration::from_secs(10), || {
        walk(&dir)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "replayed"))
    });
    let mut checked = 0;
    for p in walk(&dir).into_iter().chain([dir.clone()]) {
        let meta = std::fs::symlink_metadata(&p).expect("meta");
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
        } else if ft.is_file() {
            assert_eq!(mode, 0o600, "{}", p.display());
        } else {
            continue; // sockets are checked by their own tests
        }
        checked += 1;
    }
    assert!(checked > 10, "walked {checked} paths");
    assert_eq!(
        std::fs::metadata(&marker)
            .expect("marker")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        walk(&dir)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".log")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("orch."))),
        "the log file was made"
    );
}
