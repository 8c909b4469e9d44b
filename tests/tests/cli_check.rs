//! `zmanager check` on the shipped files and on broken ones.

use std::fs;
use std::path::Path;

use zmanager_tests::cli::zmanager;
use zmanager_tests::temp;

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).expect("write test file");
}

/// A fresh directory with empty `flows/` and `mappings/`, removed on drop.
fn temp_dir(name: &str) -> tempfile::TempDir {
    let dir = temp::dir(name);
    fs::create_dir_all(dir.path().join("flows")).expect("mkdir");
    fs::create_dir_all(dir.path().join("mappings")).expect("mkdir");
    dir
}

#[test]
fn shipped_files_pass_and_print_each_step() {
    let out = zmanager(["check"]).run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("flow Greeting"), "{stdout}");
    assert!(
        stdout.contains("?Greeting?greet  -> Greeter.greet"),
        "{stdout}"
    );
    assert!(stderr.contains(": 0 errors"), "{stderr}");
}

/// Run where there is no `flows/` directory, `check` checks what `up`
/// would run there: the built-in flows and mappings.
#[test]
fn check_and_up_agree_on_the_defaults() {
    let dir = temp_dir("defaults");
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    let out = zmanager(["check"]).current_dir(&empty).run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("flow Greeting"), "{stdout}");
    assert!(stdout.contains("flow Echo"), "{stdout}");
}

#[test]
fn a_broken_configuration_reports_every_error_at_once() {
    let temp = temp_dir("broken");
    let dir = temp.path();
    write(
        &dir.join("flows"),
        "a.ini",
        "[Orders]\n?Orders?Push\n?Orders?validate\nOrders?bad key\n??done\n[Empty]\n",
    );
    write(
        &dir.join("flows"),
        "b.toml",
        "[flow.Orders]\nsteps = [\"?Orders?Push\", \"??done\"]\n",
    );
    write(
        &dir.join("mappings"),
        "m1.ini",
        "[actionmapping]\n??x = C.x\n",
    );
    write(
        &dir.join("mappings"),
        "m2.toml",
        "[actionmapping]\n\"??x\" = \"D.x\"\n",
    );
    let out = zmanager(["check"])
        .arg("--flows")
        .arg(dir.join("flows"))
        .arg("--mappings")
        .arg(dir.join("mappings"))
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    for expected in [
        "a.ini:3: error: step `?Orders?validate` of flow Orders maps to nothing",
        "a.ini:4: error: malformed action key \"Orders?bad key\"",
        "a.ini:6: error: flow Empty has no steps",
        "b.toml:1: error: flow Orders is already defined at",
        "m2.toml:2: error: `??x` is already mapped at",
        "m1.ini:2: error: `??x` maps to C.x, but no component C is linked or loaded",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("6 errors"), "{stderr}");
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let out = zmanager(["check", "--flows", "no-such-dir"]).run();
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("no-such-dir: error: cannot read directory"),
        "{stderr}"
    );
}

/// With `[security]`, a step given to a service the configuration does not
/// list can never be taken: `check` warns of it (the shipped `Review`
/// flow's `moderator`), and says nothing once the service is listed.
#[test]
fn a_step_given_to_a_service_security_does_not_list_is_a_warning() {
    let temp = temp_dir("service-steps");
    let dir = temp.path();
    let key = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
    let check = |services: &str| {
        write(
            dir,
            "node.toml",
            &format!("[security]\nkey_file = \"node.key\"\n{services}"),
        );
        let out = zmanager(["check", "--quiet", "--config"])
            .arg(dir.join("node.toml"))
            .run();
        assert!(out.status.success(), "{out:?}");
        out.stderr
    };
    let warned = check(&format!(
        "[[security.service]]\nid = \"ada\"\npublic_key = \"{key}\"\n"
    ));
    assert!(
        warned.contains("warning: step `?Review?moderate` of flow Review is given to service \"moderator\", which [security] does not list"),
        "{warned}"
    );
    let listed = check(&format!(
        "[[security.service]]\nid = \"moderator\"\npublic_key = \"{key}\"\n"
    ));
    assert!(!listed.contains("does not list"), "{listed}");
}
