//! DigitalPy's own files, as a DigitalPy user brings them: `zmanager check
//! --digitalpy`, `zmanager import-digitalpy`, and a node run on what it
//! wrote. The fixtures in `tests/data/digitalpy/` have the shapes of
//! DigitalPy 0.3.16's files (see its README there).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use zmanager_tests::cli::zmanager;
use zmanager_tests::node::{children_of, free_port};
use zmanager_tests::temp;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/digitalpy")
        .join(name)
}

/// Copies the directory `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Lines of `text` that are diagnostics of `severity` (`error`, …).
fn lines<'a>(text: &'a str, severity: &str) -> Vec<&'a str> {
    let tag = format!(": {severity}: ");
    text.lines().filter(|l| l.contains(&tag)).collect()
}

/// DigitalPy's core package shapes: every file loads with its meaning;
/// what check reports as errors is only what is missing here (its Python
/// components), never a file it cannot read.
#[test]
fn check_on_a_digitalpy_package_reports_only_what_is_missing() {
    let out = zmanager(["check", "--digitalpy"])
        .arg(data("package"))
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let errors = lines(stderr, "error");
    assert_eq!(errors.len(), 8, "{stderr}");
    for error in &errors {
        assert!(
            error.contains("but no component Widgets is linked or loaded")
                || error.contains("but no component Parts is linked or loaded"),
            "not a missing component: {error}"
        );
    }
    // The `^` keys route: a flow step resolves to the `^` mapping.
    assert!(
        stdout.contains(
            "Subject?^Widget?GETWidget  -> Widgets.GETWidget (MISSING)  [`?^Widget?GETWidget` at "
        ),
        "{stdout}"
    );
    // The node configuration: DigitalPy's endpoints and worker count.
    assert!(
        stdout.contains("intake=tcp://127.0.0.1:29030 workers=tcp://127.0.0.1:29031 publish=tcp://127.0.0.1:29034, 4 worker processes"),
        "{stdout}"
    );
    // Manifests: name, version, requirements.
    assert!(
        stdout.contains("manifest widgets 2024.06.01  (")
            && stdout.contains(
                "requires DigitalPy 0.3.1; no component widgets is linked or loaded here"
            ),
        "{stdout}"
    );
    assert!(
        stdout.contains("manifest Parts 0.2  (")
            && stdout.contains("requires DigitalPy 0.1, depends on widgets;"),
        "{stdout}"
    );
    // The internal mapping and the object configuration are accounted
    // for in notes; the network service is not supported, and says so.
    let notes = lines(stderr, "note").join("\n");
    assert!(
        notes.contains("internal_action_mapping.ini:1: note: internal action mapping of component widgets (3 keys)"),
        "{notes}"
    );
    assert!(
        notes.contains("core_config.ini: note: not read: DigitalPy object configuration"),
        "{notes}"
    );
    assert!(
        notes.contains("integration_manager_pull_address: not carried over"),
        "{notes}"
    );
    let warnings = lines(stderr, "warning").join("\n");
    assert!(
        warnings.contains(
            "configuration_management.ini:25: warning: not supported: network service [widgets.api]"
        ),
        "{warnings}"
    );
    assert!(
        warnings.contains(
            "action \"GETPartGet-or-make\", a name with `-` that no component can declare"
        ),
        "{warnings}"
    );
    assert!(
        stderr.contains(": 8 errors, 4 warnings, 9 notes"),
        "{stderr}"
    );
}

/// An application whose mappings name linked components checks clean.
#[test]
fn check_on_a_digitalpy_application_of_linked_components_passes() {
    let out = zmanager(["check", "--digitalpy"]).arg(data("app")).run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains(": 0 errors, 0 warnings, "), "{stderr}");
    assert!(
        stdout.contains(
            "Subject?^text^upper?POSTUpper  -> Text.upper  [`?^text^upper?POSTUpper` at "
        ),
        "{stdout}"
    );
    assert!(stdout.contains("manifest echoer 1.0  ("), "{stdout}");
}

/// Bad input is still an error, with its file and line; the importer
/// writes nothing for a configuration it cannot read.
#[test]
fn broken_digitalpy_files_get_errors_with_file_and_line() {
    let dir = temp::dir("digitalpy-broken");
    let root = dir.path().join("app");
    copy_tree(&data("app"), &root);
    let conf = root.join("components/echoer/configuration");
    fs::write(
        conf.join("external_action_mapping.ini"),
        "[actionmapping]\n?^echo?GETEcho = app.Echo.echo\n?^te xt?POSTUpper = app.Text.upper\n?^a/b?x = app.Text.upper\n",
    )
    .expect("write");
    fs::write(
        conf.join("manifest.ini"),
        "[echoerManifest]\nname = echoer\nversion = 1\nrequiredAlfaVersion = latest\n",
    )
    .expect("write");
    fs::write(
        conf.join("internal_action_mapping.ini"),
        "[actionmapping]\n??ok = a.B.c\n?bad?key?here = a.B.c\n",
    )
    .expect("write");
    let node = root.join("configuration_management.ini");
    let text = fs::read_to_string(&node).expect("read");
    fs::write(
        &node,
        text.replace("worker_count = 2", "worker_count = two"),
    )
    .expect("write");

    let out = zmanager(["check", "--digitalpy"]).arg(&root).run();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let errors = lines(&out.stderr, "error");
    let at = |file: &str, line: u32, text: &str| {
        let place = format!("{file}:{line}: error: ");
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&place) && e.contains(text)),
            "no {place}…{text} in\n{}",
            errors.join("\n")
        );
    };
    at(
        "external_action_mapping.ini",
        3,
        "malformed action key \"?^te xt?POSTUpper\": character ' ' at byte 4 cannot appear in the context",
    );
    at(
        "external_action_mapping.ini",
        4,
        "character '/' at byte 3 cannot appear in the context",
    );
    at(
        "manifest.ini",
        4,
        "requiredAlfaVersion \"latest\" is not a dotted version",
    );
    at(
        "internal_action_mapping.ini",
        3,
        "malformed action key \"?bad?key?here\"",
    );
    at(
        "configuration_management.ini",
        19,
        "worker_count = \"two\" is not a whole number",
    );
    // A flow step whose mapping was refused maps to nothing.
    at(
        "echoer_flows.ini",
        9,
        "step `Subject?^text^upper?POSTUpper` of flow Echoer_Shout maps to nothing",
    );
    assert_eq!(errors.len(), 6, "{}", errors.join("\n"));

    let out_dir = dir.path().join("node");
    let out = zmanager(["import-digitalpy"])
        .arg(&root)
        .arg("--out")
        .arg(&out_dir)
        .run();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("nothing written: 1 errors in the node configuration"),
        "{}",
        out.stderr
    );
    assert!(!out_dir.join("node.toml").exists());
}

/// A running node, killed on drop.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `zmanager import-digitalpy` on an application, then `zmanager up
/// --config` on what it wrote: a node on DigitalPy's endpoints with its
/// worker count, whose `^` steps route to linked components.
#[test]
fn an_imported_digitalpy_application_runs_on_its_endpoints_and_workers() {
    let dir = temp::dir("digitalpy-import");
    let root = dir.path().join("app");
    copy_tree(&data("app"), &root);
    // DigitalPy's ports, moved to free ones (other tests run at once).
    let ports: Vec<(u16, u16)> = [19030, 19031, 19034, 19035]
        .into_iter()
        .map(|p| (p, free_port()))
        .collect();
    let conf = root.join("configuration_management.ini");
    let mut text = fs::read_to_string(&conf).expect("read");
    for (from, to) in &ports {
        text = text.replace(&format!(":{from}"), &format!(":{to}"));
    }
    fs::write(&conf, text).expect("write");

    let out_dir = dir.path().join("node");
    let out = zmanager(["import-digitalpy"])
        .arg(&root)
        .arg("--out")
        .arg(&out_dir)
        .run();
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("(1 flow files in "), "{}", out.stdout);
    let config = out_dir.join("node.toml");
    let toml = fs::read_to_string(&config).expect("node.toml");
    let endpoint = |port: u16| format!("tcp://127.0.0.1:{port}");
    let (intake, workers, publish) = (
        endpoint(ports[0].1),
        endpoint(ports[1].1),
        endpoint(ports[2].1),
    );
    assert!(toml.contains("\nworkers = 2  # "), "{toml}");
    assert!(toml.contains(&format!("intake = \"{intake}\"")), "{toml}");
    assert!(
        toml.contains("echoer 1.0 (requires DigitalPy 0.3.16)"),
        "{toml}"
    );
    assert!(
        out_dir.join("flows/echoer_flows.ini").exists()
            && out_dir.join("action_mappings/echoer.ini").exists(),
        "{toml}"
    );
    // The same text as DigitalPy's: copied unchanged.
    assert_eq!(
        fs::read_to_string(out_dir.join("action_mappings/echoer.ini")).expect("read"),
        fs::read_to_string(
            root.join("components/echoer/configuration/external_action_mapping.ini")
        )
        .expect("read"),
    );

    let check = zmanager(["check", "--config"]).arg(&config).run();
    assert!(check.status.success(), "{}\n{}", check.stdout, check.stderr);

    let data_dir = dir.path().join("data");
    let mut child = zmanager(["up", "--config"])
        .arg(&config)
        .arg("--no-http")
        .arg("--data-dir")
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let stdout = child.stdout.take().expect("piped stdout");
    let node = Node(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the node's first line");
    assert!(
        line.contains(&format!(
            "intake={intake} workers={workers} publish={publish} "
        )),
        "{line}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while children_of(node.0.id()).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        children_of(node.0.id()).len(),
        2,
        "DigitalPy's worker_count"
    );

    let send = |flow: &str, payload: &str| {
        let out = zmanager(["send", "--config"])
            .arg(&config)
            .args([flow, "--payload", payload])
            .run();
        assert!(
            out.status.success(),
            "{flow}: {}\n{}",
            out.stdout,
            out.stderr
        );
        out.stdout.trim().to_owned()
    };
    assert_eq!(
        send("Echoer_Shout", r#"{"text": "hello"}"#),
        r#"{"text":"HELLO"}"#
    );
    assert_eq!(send("Echoer_GetEcho", r#"{"id": 7}"#), r#"{"id":7}"#);
    drop(node);
}

/// An import never writes over what is there.
#[test]
fn import_refuses_a_directory_that_is_not_empty() {
    let dir = temp::dir("digitalpy-full");
    fs::write(dir.path().join("keep.txt"), "mine").expect("write");
    let out = zmanager(["import-digitalpy"])
        .arg(data("app"))
        .arg("--out")
        .arg(dir.path())
        .run();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("not empty; import into a new directory"),
        "{}",
        out.stderr
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("keep.txt")).expect("read"),
        "mine"
    );
}

/// The code block after `marker` in `doc`.
fn block_after(doc: &str, marker: &str) -> String {
    let mut lines = doc.lines().skip_while(|l| *l != marker).skip(1);
    assert!(
        lines.next().is_some_and(|fence| fence.starts_with("```")),
        "no code block after {marker}"
    );
    let mut block = String::new();
    for line in lines.take_while(|l| *l != "```") {
        block.push_str(line);
        block.push('\n');
    }
    block
}

/// docs/components.md's walk-through, as written, in a crate outside this
/// workspace (part of issue #21 with the rest of this file): its
/// `Cargo.toml` for outside the workspace and its `src/lib.rs`, built in
/// a temporary directory with Cargo offline (every crate it needs is the
/// workspace's, already downloaded), and the library checked by
/// `zmanager check` as steps 6 to 8 use it.
#[test]
fn the_component_walkthrough_builds_outside_the_workspace() {
    let root = zmanager_tests::workspace_root();
    let doc = fs::read_to_string(root.join("docs/components.md")).expect("read the doc");
    let manifest = block_after(&doc, "<!-- outside the workspace: Cargo.toml -->");
    let lib = block_after(&doc, "<!-- file: components/reverse/src/lib.rs -->");
    let path = r#"path = "../zmanager/components/sdk""#;
    assert!(manifest.contains(path), "{manifest}");
    let sdk = root.join("components/sdk");
    let manifest = manifest.replace(path, &format!("path = {:?}", sdk.display().to_string()));

    let dir = temp::dir("sdk-outside");
    let krate = dir.path().join("my-reverse");
    assert!(
        !krate.starts_with(root),
        "{} must be outside the workspace",
        krate.display()
    );
    fs::create_dir_all(krate.join("src")).expect("mkdir");
    fs::write(krate.join("Cargo.toml"), manifest).expect("write");
    fs::write(krate.join("src/lib.rs"), lib).expect("write");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let target = dir.path().join("target");
    let out = std::process::Command::new(cargo)
        .current_dir(&krate)
        .args(["build", "--offline", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "the walk-through's crate does not build outside the workspace:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let library = target.join("debug").join(format!(
        "{}my_reverse{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(library.exists(), "{}", library.display());
    let check = zmanager([
        "check",
        "--flows",
        "components/reverse/flows",
        "--mappings",
        "components/reverse/action_mappings",
        "--component",
    ])
    .arg(&library)
    .run();
    assert!(check.status.success(), "{}\n{}", check.stdout, check.stderr);
    assert!(
        check
            .stdout
            .contains("component Reverse 0.1.0  (loaded from "),
        "{}",
        check.stdout
    );
    assert!(
        check.stderr.contains(": 0 errors, 0 warnings"),
        "{}",
        check.stderr
    );
}
