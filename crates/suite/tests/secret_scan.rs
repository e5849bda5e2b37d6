//! The secret scan of the offline checks (`deploy/scan-secrets.sh`, run by `deploy/test.sh`)
//! fails on a committed secret, names where it is, and passes on the tree as it is.
//!
//! Each test copies the tracked files into a fresh git repository, plants what a careless commit
//! would add (an AWS access key, a private key, a password in a database URL, a Kubernetes
//! Secret with values, a secret build argument, a literal password in compose), runs the same
//! script on the copy and reads its exit status and its `path:line: what` findings. The planted
//! credentials are made up at run time, so that this file holds none itself (the scan of the
//! clean copy, which includes this file, shows that).
//!
//! The script needs what `deploy/test.sh` sets up anyway: git, kubectl and the tools venv of
//! deploy/lib.sh (installed on first use into `SHOP_STATE_DIR`, else the repository's `.local`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The state directory of the real checkout, so that the copy reuses its tools and scan cache
/// rather than installing them again into its own `.local`.
fn state_dir() -> PathBuf {
    match std::env::var_os("SHOP_STATE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => root().join(".local"),
    }
}

/// Random lowercase hex, `len` characters: the body of a made-up credential.
fn made_up(len: usize) -> String {
    let mut out = String::new();
    while out.len() < len {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(len);
    out
}

fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        // A test run from a git hook would otherwise act on the hook's repository.
        .env_remove("GIT_DIR")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_WORK_TREE")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What the scan said: its exit status and everything it printed.
struct Verdict {
    passed: bool,
    output: String,
}

impl Verdict {
    fn assert_names(&self, finding: &str) {
        assert!(
            self.output.contains(finding),
            "the scan should report `{finding}`; it printed:\n{}",
            self.output
        );
    }
}

/// A copy of the tracked files (as they are in the work tree) in its own git repository,
/// removed on drop.
struct Tree {
    dir: PathBuf,
}

impl Tree {
    fn copy_of_repository() -> Tree {
        let root = root();
        let dir = std::env::temp_dir().join(format!(
            "shop-secret-scan-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let listed = git(&root, &["ls-files", "-z"]);
        for path in listed.split(|b| *b == 0).filter(|p| !p.is_empty()) {
            let path = std::str::from_utf8(path).expect("UTF-8 path");
            let from = root.join(path);
            if !from.is_file() {
                continue; // deleted in the work tree, not yet in the index
            }
            let to = dir.join(path);
            fs::create_dir_all(to.parent().expect("a parent")).expect("create the directory");
            fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {path}: {e}"));
        }
        git(&dir, &["init", "-q"]);
        git(&dir, &["add", "-A"]);
        Tree { dir }
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.dir.join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    /// Writes `path` and stages it (the scan covers tracked files).
    fn write(&self, path: &str, contents: &str) {
        let file = self.dir.join(path);
        fs::create_dir_all(file.parent().expect("a parent")).expect("create the directory");
        fs::write(&file, contents).unwrap_or_else(|e| panic!("write {path}: {e}"));
        git(&self.dir, &["add", "--", path]);
    }

    /// Appends `lines` to `path`; the line number of the first one.
    fn append(&self, path: &str, lines: &str) -> usize {
        let mut text = self.read(path);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let first = text.lines().count() + 1;
        text.push_str(lines);
        self.write(path, &text);
        first
    }

    /// Replaces the one line containing `needle` by `with`; its line number.
    fn replace_line(&self, path: &str, needle: &str, with: &str) -> usize {
        let text = self.read(path);
        let found: Vec<usize> = (0..text.lines().count())
            .filter(|&i| text.lines().nth(i).is_some_and(|l| l.contains(needle)))
            .collect();
        assert_eq!(found.len(), 1, "one line of {path} contains {needle:?}");
        let edited: Vec<&str> = text
            .lines()
            .enumerate()
            .map(|(i, l)| if i == found[0] { with } else { l })
            .collect();
        self.write(path, &(edited.join("\n") + "\n"));
        found[0] + 1
    }

    /// Inserts `line` after the one line equal to `after`; the new line's number.
    fn insert_after(&self, path: &str, after: &str, line: &str) -> usize {
        let text = self.read(path);
        let at = text
            .lines()
            .position(|l| l == after)
            .unwrap_or_else(|| panic!("{path} has a line {after:?}"));
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(at + 1, line);
        self.write(path, &(lines.join("\n") + "\n"));
        at + 2
    }

    fn scan(&self, args: &[&str]) -> Verdict {
        let out = Command::new("bash")
            .arg("deploy/scan-secrets.sh")
            .args(args)
            .current_dir(&self.dir)
            .env("SHOP_STATE_DIR", state_dir())
            .env_remove("GIT_DIR")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_WORK_TREE")
            .output()
            .expect("bash runs deploy/scan-secrets.sh");
        Verdict {
            passed: out.status.success(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_tree_as_committed_passes_the_secret_scan() {
    let tree = Tree::copy_of_repository();
    let verdict = tree.scan(&[]);
    assert!(
        verdict.passed,
        "the repository itself fails the secret scan:\n{}",
        verdict.output
    );
    verdict.assert_names("ok: no secrets in the");
}

#[test]
fn committed_credentials_fail_the_scan_naming_file_and_line() {
    let tree = Tree::copy_of_repository();
    let access_key = format!("AKIA{}", made_up(16).to_uppercase());
    tree.write(
        "services/order/src/vendor.rs",
        &format!("// Left in by mistake.\npub const ARCHIVE_KEY_ID: &str = \"{access_key}\";\n"),
    );
    let body = made_up(64);
    tree.write(
        "deploy/keys/deploy-key",
        &format!(
            "-----BEGIN OPENSSH {kind}-----\n{body}\n-----END OPENSSH {kind}-----\n",
            kind = "PRIVATE KEY"
        ),
    );
    let url_line = tree.append(
        "k8s/base/order/config.env",
        &format!(
            "ORDER_DATABASE_URL=postgres://orders:{}@order-db-rw:5432/orders\n",
            made_up(20)
        ),
    );

    let verdict = tree.scan(&[]);
    assert!(
        !verdict.passed,
        "planted credentials passed the scan:\n{}",
        verdict.output
    );
    verdict.assert_names("services/order/src/vendor.rs:2: AWS Access Key");
    verdict.assert_names("deploy/keys/deploy-key:1: Private Key");
    verdict.assert_names(&format!(
        "k8s/base/order/config.env:{url_line}: Basic Auth Credentials"
    ));
    verdict.assert_names(&format!(
        "k8s/base/order/config.env:{url_line}: ORDER_DATABASE_URL holds a URL with a password in a ConfigMap"
    ));
    verdict.assert_names("deploy/scan-secrets.sh --update");
}

#[test]
fn secrets_in_manifests_compose_or_the_image_fail_the_scan() {
    let tree = Tree::copy_of_repository();
    let password = made_up(24);
    tree.write(
        "k8s/base/order/kafka-credentials.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: order-kafka\nstringData:\n  \
             sasl-password: {password}\n"
        ),
    );
    let generator = tree.append(
        "k8s/overlays/dev/kustomization.yaml",
        &format!(
            "secretGenerator:\n  - name: order-webhook\n    literals:\n      - signing-key={}\n",
            made_up(16)
        ),
    );
    let compose = tree.replace_line(
        "docker-compose.yml",
        "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-postgres}",
        &format!("      POSTGRES_PASSWORD: {password}"),
    );
    let default = tree.replace_line(
        "docker-compose.yml",
        "SHOP_DB_PASSWORD: ${SHOP_DB_PASSWORD:-shop}",
        &format!(
            "      SHOP_DB_PASSWORD: ${{SHOP_DB_PASSWORD:-{}}}",
            made_up(12)
        ),
    );
    let build_arg = tree.insert_after(
        "Dockerfile",
        "FROM chef AS builder",
        "ARG CARGO_REGISTRY_TOKEN",
    );
    let context_copy =
        tree.insert_after("Dockerfile", "USER 65532:65532", "COPY deploy/ /etc/shop/");
    // A build context that is no longer an allowlist.
    let ignore = tree.read(".dockerignore").replace("\n*\n", "\n");
    tree.write(".dockerignore", &ignore);
    // A literal password in a container's environment (the migrate init container).
    tree.insert_after(
        "k8s/base/order/deployment.yaml",
        "          env:",
        &format!("            - name: KAFKA_SASL_PASSWORD\n              value: {password}"),
    );

    let verdict = tree.scan(&[]);
    assert!(
        !verdict.passed,
        "planted secrets passed the scan:\n{}",
        verdict.output
    );
    verdict.assert_names(
        "k8s/base/order/kafka-credentials.yaml:5: Secret order-kafka has literal stringData",
    );
    verdict.assert_names(&format!(
        "k8s/overlays/dev/kustomization.yaml:{generator}: secretGenerator"
    ));
    verdict.assert_names("k8s/overlays/{dev}: renders Secret order-webhook with data");
    verdict.assert_names(&format!(
        "docker-compose.yml:{compose}: POSTGRES_PASSWORD is a literal"
    ));
    verdict.assert_names(&format!(
        "docker-compose.yml:{default}: Compose default of a secret, not in .secrets.baseline"
    ));
    verdict.assert_names(&format!("Dockerfile:{build_arg}: ARG CARGO_REGISTRY_TOKEN"));
    verdict.assert_names(&format!(
        "Dockerfile:{context_copy}: COPY deploy/ /etc/shop/: the runtime stage takes files from the build context"
    ));
    verdict.assert_names(".dockerignore:1: the build context must start from nothing (`*`)");
    verdict.assert_names(
        "k8s/overlays/{dev,prod}: Deployment order, container migrate: KAFKA_SASL_PASSWORD is a literal",
    );
}

#[test]
fn a_finding_is_allowed_only_by_an_audited_baseline_entry_and_only_while_it_is_there() {
    let tree = Tree::copy_of_repository();
    // Three made-up fixtures: one audited with its reason, one marked a non-secret without
    // saying why, one left as --update lists it.
    let [audited, no_why, unaudited] = [
        "crates/testkit/src/fixture_login.rs",
        "crates/testkit/src/fixture_admin.rs",
        "crates/testkit/src/fixture_replica.rs",
    ];
    for fixture in [audited, no_why, unaudited] {
        tree.write(
            fixture,
            &format!(
                "// A fixture.\npub fn login() {{\n    let password = \"{}\";\n    let _ = password;\n}}\n",
                made_up(20)
            ),
        );
    }
    let found = |fixture: &str| format!("{fixture}:3: Secret Keyword");

    let verdict = tree.scan(&[]);
    assert!(!verdict.passed, "new findings passed:\n{}", verdict.output);
    for fixture in [audited, no_why, unaudited] {
        verdict.assert_names(&format!("{}, not in .secrets.baseline", found(fixture)));
    }

    let update = tree.scan(&["--update"]);
    assert!(update.passed, "--update failed:\n{}", update.output);
    update.assert_names("to audit");
    update.assert_names(&found(audited));

    // Each detector that fires on a line has its own entry (the keyword one, and the entropy
    // one for hex): all of a fixture's entries are audited alike.
    let mut baseline: serde_json::Value =
        serde_json::from_str(&tree.read(".secrets.baseline")).expect("the baseline is JSON");
    let mut audit = |fixture: &str, field: &str, value: serde_json::Value| {
        let entries = baseline["results"][fixture]
            .as_array_mut()
            .unwrap_or_else(|| panic!("--update lists {fixture}"));
        for entry in entries {
            entry[field] = value.clone();
        }
    };
    audit(audited, "is_secret", false.into());
    audit(audited, "why", "a made-up password of a test".into());
    audit(no_why, "is_secret", false.into());
    tree.write(".secrets.baseline", &baseline.to_string());
    let verdict = tree.scan(&[]);
    assert!(
        !verdict.passed,
        "entries without an audit passed:\n{}",
        verdict.output
    );
    verdict.assert_names(&format!(
        "{}: its .secrets.baseline entry says no \"why\"",
        found(no_why)
    ));
    verdict.assert_names(&format!("{}: not audited", found(unaudited)));
    assert!(
        !verdict.output.contains(&found(audited)),
        "the audited entry is reported:\n{}",
        verdict.output
    );

    // The other two fixtures gone, their entries are stale: the baseline must say what is
    // really there.
    git(&tree.dir, &["rm", "-q", "-f", "--", no_why, unaudited]);
    let verdict = tree.scan(&[]);
    assert!(!verdict.passed, "stale entries passed:\n{}", verdict.output);
    for fixture in [no_why, unaudited] {
        verdict.assert_names(&format!(
            "{}: listed in .secrets.baseline but no longer found",
            found(fixture)
        ));
    }

    // --update drops them and keeps the audit of the one still there: the tree passes.
    let update = tree.scan(&["--update"]);
    assert!(update.passed, "--update failed:\n{}", update.output);
    let verdict = tree.scan(&[]);
    assert!(
        verdict.passed,
        "the audited entry failed after --update:\n{}",
        verdict.output
    );
}
