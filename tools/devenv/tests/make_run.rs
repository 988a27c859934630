//! `make run` end to end: setpoint-dev brings up the control plane, setpoint-api and
//! setpoint-reconciler (as Setpoint's ServiceAccount), the env file it writes lets
//! setpointctl list, get and set, the reconciler scales as the leader, errors are clear,
//! and Ctrl-C stops everything. Needs the workspace binaries (`make test` builds them
//! first).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A workspace binary: under Bazel its path comes in `bazel_path` (rules_rust sets
/// `CARGO_BIN_EXE_<name>` for binaries given as data); under Cargo, the target folder.
fn binary(name: &str, bazel_path: Option<&str>) -> PathBuf {
    if let Some(path) = bazel_path {
        return path.into();
    }
    // target/debug/deps/make_run-<hash> → target/debug/<name>
    let path = std::env::current_exe()
        .expect("test binary path")
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (`make test` does)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// setpoint-dev, stopped with SIGINT (like Ctrl-C) when dropped.
struct Dev(Child);

impl Dev {
    fn interrupt(&mut self) -> std::process::ExitStatus {
        devenv::send_signal(self.0.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "setpoint-dev did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.interrupt();
        }
    }
}

fn read_env(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .expect("env file")
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

fn setpointctl(env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(binary(
        "setpointctl",
        option_env!("CARGO_BIN_EXE_setpointctl"),
    ))
    .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    .args(args)
    .output()
    .expect("run setpointctl")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What setpoint-reconciler did in the cluster as Setpoint's ServiceAccount (the RBAC of
/// `k8s/base`): it scaled `namespace/name` to `replicas`, and it holds the leader Lease.
fn reconciled_as_leader(kubeconfig: &str, namespace: &str, name: &str, replicas: i32) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::Api;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("admin config");
        let admin = kube::Client::try_from(config).expect("admin client");
        let deployments = Api::<Deployment>::namespaced(admin.clone(), namespace);
        testenv::wait_for("the reconciler to scale the Deployment", || async {
            let deployment = deployments.get(name).await.ok()?;
            (deployment.spec?.replicas == Some(replicas)).then_some(())
        })
        .await;
        let lease = Api::<Lease>::namespaced(admin, devenv::NAMESPACE)
            .get("setpoint-leader")
            .await
            .expect("the leader Lease exists");
        let holder = lease.spec.and_then(|spec| spec.holder_identity);
        assert!(
            holder.is_some_and(|holder| !holder.is_empty()),
            "the reconciler holds the Lease"
        );
    });
}

#[test]
fn make_run_serves_the_cli_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = std::fs::File::create(dir.path().join("setpoint-dev.log")).expect("log");
    let mut dev = Dev(Command::new(env!("CARGO_BIN_EXE_setpoint-dev"))
        .arg(format!("--dir={}", dir.path().display()))
        .arg(format!(
            "--api-bin={}",
            binary("setpoint-api", option_env!("CARGO_BIN_EXE_setpoint-api")).display()
        ))
        .arg(format!(
            "--reconciler-bin={}",
            binary(
                "setpoint-reconciler",
                option_env!("CARGO_BIN_EXE_setpoint-reconciler")
            )
            .display()
        ))
        .arg(format!("--listen=127.0.0.1:{}", free_port()))
        .arg(format!("--http-listen=127.0.0.1:{}", free_port()))
        .arg(format!(
            "--reconciler-http-listen=127.0.0.1:{}",
            free_port()
        ))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start setpoint-dev"));

    let env_file = dir.path().join("env");
    let started = Instant::now();
    while !env_file.exists() {
        let log = std::fs::read_to_string(dir.path().join("setpoint-dev.log")).unwrap_or_default();
        assert!(
            dev.0.try_wait().expect("wait").is_none(),
            "setpoint-dev exited:\n{log}"
        );
        assert!(
            started.elapsed() < START_TIMEOUT,
            "no env file after {START_TIMEOUT:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let env = read_env(&env_file);
    let operator = env.clone();
    let mut viewer = env.clone();
    let value = |key: &str| env.iter().find(|(k, _)| k == key).expect(key).1.clone();
    viewer.push(("SETPOINT_CERT".into(), value("SETPOINT_VIEWER_CERT")));
    viewer.push(("SETPOINT_KEY".into(), value("SETPOINT_VIEWER_KEY")));

    let list = setpointctl(&operator, &["list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    for name in ["web", "api", "worker"] {
        assert!(stdout(&list).contains(name), "{}", stdout(&list));
    }

    let set = setpointctl(&operator, &["set", "demo/web", "4"]);
    assert!(set.status.success(), "{}", stderr(&set));
    let get = setpointctl(&operator, &["--output", "json", "get", "demo/web"]);
    let json: serde_json::Value = serde_json::from_slice(&get.stdout).expect("JSON output");
    assert_eq!(json[0]["desiredReplicas"], 4);
    assert_eq!(json[0]["namespace"], "demo");
    reconciled_as_leader(&value("SETPOINT_KUBECONFIG"), "demo", "web", 4);

    // watch: the current state, then a line per change.
    let mut watch = Command::new(binary(
        "setpointctl",
        option_env!("CARGO_BIN_EXE_setpointctl"),
    ))
    .envs(viewer.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    .args(["watch", "-n", "demo"])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("setpointctl watch");
    let (lines_sender, lines) = std::sync::mpsc::channel();
    let watch_stdout = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(watch_stdout)) {
            let Ok(line) = line else { return };
            if lines_sender.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = || {
        lines
            .recv_timeout(Duration::from_secs(60))
            .expect("a line from setpointctl watch")
    };
    let initial: Vec<String> = (0..3).map(|_| next_line()).collect();
    for name in ["api", "web", "worker"] {
        assert!(
            initial
                .iter()
                .any(|line| line.starts_with("INITIAL") && line.contains(&format!("demo/{name} "))),
            "{initial:?}"
        );
    }

    // set --dry-run stores nothing; set --wait returns once reconciled, which the watch
    // shows too.
    let dry = setpointctl(&operator, &["set", "demo/worker", "3", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(stderr(&dry).contains("dry run"), "{}", stderr(&dry));
    let waited = setpointctl(&operator, &["set", "demo/worker", "3", "--wait=120s"]);
    assert!(waited.status.success(), "{}", stderr(&waited));
    assert!(
        stderr(&waited).contains("demo/worker: Reconciled"),
        "{}",
        stderr(&waited)
    );
    let change = loop {
        let line = next_line();
        if line.contains("demo/worker ") && line.contains("desired=3") {
            break line;
        }
    };
    assert!(change.starts_with("CHANGED"), "{change}");
    let _ = watch.kill();
    let _ = watch.wait();

    // release: Setpoint stops managing; a second release finds nothing to release.
    let released = setpointctl(&operator, &["release", "demo/worker"]);
    assert!(released.status.success(), "{}", stderr(&released));
    assert!(
        stdout(&released).contains("Unmanaged"),
        "{}",
        stdout(&released)
    );
    let usage = setpointctl(&operator, &["set", "demo/web", "2", "--wait=soon"]);
    assert_eq!(usage.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&usage).contains("expected a duration"),
        "{}",
        stderr(&usage)
    );
    let completion = setpointctl(&[], &["completion", "bash"]);
    assert!(completion.status.success(), "{}", stderr(&completion));
    assert!(
        stdout(&completion).contains("setpointctl"),
        "completion script"
    );

    let mut unreachable = operator.clone();
    unreachable.push((
        "SETPOINT_SERVER".into(),
        format!("https://localhost:{}", free_port()),
    ));
    let mut missing_cert = operator.clone();
    missing_cert.push(("SETPOINT_CERT".into(), "/nonexistent/operator.crt".into()));
    let mut wrong_ca = operator.clone();
    wrong_ca.push(("SETPOINT_CA".into(), value("SETPOINT_VIEWER_CERT")));
    for (env, args, expected) in [
        (&viewer, &["set", "demo/web", "1"][..], "permission denied"),
        (&operator, &["get", "demo/missing"][..], "not found"),
        (
            &operator,
            &["set", "demo/web", "-1"][..],
            "invalid argument",
        ),
        (&operator, &["get", "web"][..], "expected NAMESPACE/NAME"),
        (
            &operator,
            &["release", "demo/worker"][..],
            "has no setpoint",
        ),
        (&unreachable, &["list"][..], "Connection refused"),
        (&missing_cert, &["list"][..], "reading client certificate"),
        (&wrong_ca, &["list"][..], "invalid peer certificate"),
    ] {
        let output = setpointctl(env, args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }

    let status = dev.interrupt();
    assert!(
        status.success(),
        "setpoint-dev exits cleanly on Ctrl-C: {status}"
    );
    assert!(!env_file.exists(), "the env file is removed on exit");
}
