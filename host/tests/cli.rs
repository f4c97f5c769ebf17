//! The real `monoize` binary as a process, in a scratch directory: startup creates the
//! default database (DB2, DB3) with every table (DBT1–DBT4), answers `/healthz`, stops cleanly
//! on SIGTERM, restarts without changing the schema, and refuses bad configuration (DB1) with
//! one line and a non-zero exit.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test at once when the process misbehaves"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

const TABLES: [&str; 13] = [
    "api_keys",
    "billing_ledger",
    "group_members",
    "model_mappings",
    "model_metadata_records",
    "model_registry_records",
    "monoize_channels",
    "monoize_provider_models",
    "monoize_providers",
    "providers",
    "sessions",
    "stored_responses",
    "users",
];

/// A running server that is killed if the test fails before stopping it.
struct Server {
    child: Option<Child>,
    port: u16,
}

impl Server {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_logging_to(dir, args, env, Stdio::null())
    }

    /// [`Server::start`] with its stdout, where its log goes, sent to `stdout`.
    fn start_logging_to(dir: &Path, args: &[&str], env: &[(&str, &str)], stdout: Stdio) -> Server {
        let port = free_port();
        let child = monoize(dir)
            .args(args)
            .envs(env.iter().copied())
            .env("MONOIZE_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn monoize");
        Server {
            child: Some(child),
            port,
        }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("server already stopped")
    }

    /// Polls `/healthz` until it answers; fails at once if the process exits.
    fn wait_healthy(&mut self) -> (u16, serde_json::Value) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child().try_wait().expect("poll child") {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child().stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("monoize exited early with {status}: {stderr}");
            }
            if let Some((status, body)) = http_get(self.port, "/healthz") {
                return (
                    status,
                    serde_json::from_str(&body).expect("healthz answers JSON"),
                );
            }
            sleep(Duration::from_millis(50));
        }
        panic!("monoize did not answer /healthz within {STARTUP_TIMEOUT:?}");
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(self) -> ExitStatus {
        self.signal("-TERM")
    }

    /// Sends `signal` (`-TERM`, `-INT`) and waits for the exit status.
    fn signal(mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        let signalled = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(signalled.success());
        wait_with_timeout(&mut child, EXIT_TIMEOUT).expect("monoize did not stop after SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The binary, run in `dir` with none of our variables inherited from the test's environment.
fn monoize(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_monoize"));
    command.current_dir(dir).env("RUST_LOG", "info");
    for variable in [
        "MONOIZE_DATABASE_DSN",
        "DATABASE_URL",
        "MONOIZE_LISTEN",
        "MONOIZE_LOG_FORMAT",
        "MONOIZE_ROUTING_PLUGIN",
        "MONOIZE_BILLING_PLUGIN",
        "MONOIZE_DASHBOARD_PLUGIN",
        "MONOIZE_PLUGIN_TIMEOUT_MS",
        "MONOIZE_PLUGIN_MEMORY_MB",
        "MONOIZE_PLUGIN_CACHE_DIR",
        "MONOIZE_USER_PASSWORD",
    ] {
        command.env_remove(variable);
    }
    command
}

/// Runs the binary to completion, killing it if it outlives [`EXIT_TIMEOUT`].
fn run_to_exit(mut command: Command) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn monoize");
    let waited = wait_with_timeout(&mut child, EXIT_TIMEOUT);
    if waited.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("collect output");
    assert!(waited.is_some(), "monoize kept running: {output:?}");
    (output, started.elapsed())
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("poll child") {
            return Some(status);
        }
        sleep(Duration::from_millis(20));
    }
    None
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A minimal HTTP/1.1 GET on loopback: `None` while nothing listens or answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let address = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    // No half-close after the request: hyper drops a connection whose read side ends early.
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}

/// A minimal HTTP/1.1 POST of a JSON body on loopback.
fn http_post_json(port: u16, path: &str, body: &str) -> Option<(u16, String)> {
    let address = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}

/// `monoize user create ARGS` in `dir`, with `stdin` written to its standard input.
fn user_create(dir: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = monoize(dir)
        .args(["user", "create"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn monoize");
    if let Some(mut pipe) = child.stdin.take() {
        // The process may exit before reading (a bad argument); that is not the test's error.
        let _ = pipe.write_all(stdin.as_bytes());
    }
    let waited = wait_with_timeout(&mut child, EXIT_TIMEOUT);
    if waited.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("collect output");
    assert!(waited.is_some(), "monoize kept running: {output:?}");
    output
}

/// The schema version and every schema object's SQL.
fn schema_of(path: &Path) -> (i64, Vec<(String, String, Option<String>)>) {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database read-only");
    let version = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user_version");
    let mut statement = connection
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .expect("prepare");
    let objects = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .expect("query sqlite_master")
        .collect::<Result<Vec<_>, _>>()
        .expect("read sqlite_master");
    (version, objects)
}

fn tables_of(schema: &[(String, String, Option<String>)]) -> Vec<&str> {
    schema
        .iter()
        .filter(|(kind, name, _)| kind == "table" && !name.starts_with("sqlite_"))
        .map(|(_, name, _)| name.as_str())
        .collect()
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn db2_db3_dbt_serve_creates_the_default_database_and_a_restart_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database: PathBuf = dir.path().join("data/monoize.db");

    let mut server = Server::start(dir.path(), &["serve"], &[]);
    let (status, body) = server.wait_healthy();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    let version = body["schema_version"]
        .as_i64()
        .expect("schema_version is a number");
    assert!(version >= 1);
    let (status, not_found) = http_get(server.port, "/no/such/path").expect("404 answer");
    assert_eq!(status, 404);
    assert!(not_found.contains("not_found_error"), "{not_found}");
    let exit = server.terminate();
    assert!(
        exit.success(),
        "SIGTERM must stop monoize with exit 0, got {exit}"
    );

    assert!(
        database.is_file(),
        "DB2/DB3: ./data/monoize.db must be created"
    );
    let first = schema_of(&database);
    assert_eq!(first.0, version);
    assert_eq!(tables_of(&first.1), TABLES);

    // No subcommand means `serve`; SIGINT stops it as cleanly as SIGTERM.
    let mut again = Server::start(dir.path(), &[], &[]);
    assert_eq!(again.wait_healthy().0, 200);
    assert!(again.signal("-INT").success());
    assert_eq!(
        schema_of(&database),
        first,
        "a restart must not change the schema"
    );
}

/// A log read from a file, a pipe, journald or `docker logs` is plain text: colour codes are for
/// a terminal only.
#[test]
fn serve_logs_plain_text_lines_without_colour_codes_when_its_stdout_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start_logging_to(dir.path(), &["serve"], &[], Stdio::piped());
    assert_eq!(server.wait_healthy().0, 200);
    let mut stdout = server.child().stdout.take().expect("piped stdout");
    assert!(server.terminate().success());
    let mut log = String::new();
    stdout.read_to_string(&mut log).expect("read the log");
    assert!(log.contains("monoize is listening"), "{log}");
    assert!(log.contains(" INFO monoize::cli: "), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log: {log:?}");
}

#[test]
fn db1_database_url_is_used_when_the_dsn_variable_is_empty() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [
        ("MONOIZE_DATABASE_DSN", "  "),
        ("DATABASE_URL", "sqlite://nested/dir/app.db"),
    ];
    let mut server = Server::start(dir.path(), &["serve"], &env);
    assert_eq!(server.wait_healthy().0, 200);
    assert!(server.terminate().success());
    assert!(dir.path().join("nested/dir/app.db").is_file());
    assert!(
        !dir.path().join("data").exists(),
        "the default DSN must not be used"
    );
}

/// The plugin pool reserves address space for every linear memory it may hold (4 GiB each, so
/// plugin code runs without bounds checks). Sized by what components use, not one memory per
/// core instance, a server with the default limits stays near 1 TB instead of ~8.7 TB: under
/// an operator's `ulimit -v` of a few TB it starts.
#[cfg(target_os = "linux")]
#[test]
fn the_plugin_pool_reserves_about_a_terabyte_of_address_space_not_eight() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(dir.path(), &["serve"], &[]);
    assert_eq!(server.wait_healthy().0, 200);
    let pid = server.child().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let vm_size_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize");
    let tib = vm_size_kib as f64 / (1u64 << 30) as f64;
    assert!(
        tib < 1.5,
        "the server reserves {tib:.2} TiB of address space"
    );
    assert!(server.terminate().success());
}

#[test]
fn serve_listen_flag_overrides_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flag_port = free_port();
    let listen = format!("127.0.0.1:{flag_port}");
    let mut server = Server::start(dir.path(), &["serve", "--listen", &listen], &[]);
    let env_port = std::mem::replace(&mut server.port, flag_port);
    assert_eq!(server.wait_healthy().0, 200);
    assert!(
        http_get(env_port, "/healthz").is_none(),
        "MONOIZE_LISTEN must be overridden"
    );
    assert!(server.terminate().success());
}

/// Runs `monoize serve` in `dir` with `variable` set to `value`, which must make it exit at
/// once and unsuccessfully: its one line of stderr, and stdout and stderr together.
fn serve_refusing(dir: &Path, variable: &str, value: &std::ffi::OsStr) -> (String, String) {
    let mut command = monoize(dir);
    command.arg("serve").env(variable, value);
    let (output, took) = run_to_exit(command);
    assert!(!output.status.success());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("monoize: "), "{lines:?}");
    let everything = format!("{}{}", String::from_utf8_lossy(&output.stdout), lines[0]);
    (lines[0].clone(), everything)
}

#[test]
fn db1_postgres_dsn_exits_at_once_with_one_line_and_no_credentials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (line, everything) = serve_refusing(
        dir.path(),
        "MONOIZE_DATABASE_DSN",
        "postgres://user:secret@db/x".as_ref(),
    );
    assert!(line.contains("postgres"), "{line}");
    assert!(!everything.contains("secret"), "{everything}");
    assert!(!dir.path().join("data").exists(), "nothing may be created");
}

#[test]
fn db3_unwritable_path_exits_naming_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("plain-file"), b"not a directory").expect("write file");
    let path = dir.path().join("plain-file/sub/monoize.db");
    let dsn = format!("sqlite://{}", path.display());
    let (line, _) = serve_refusing(dir.path(), "MONOIZE_DATABASE_DSN", dsn.as_ref());
    assert!(line.contains(&path.display().to_string()), "{line}");
}

#[test]
fn serve_with_an_unreadable_upstream_ca_file_exits_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("no-such-ca.pem");
    let (line, _) = serve_refusing(dir.path(), "MONOIZE_UPSTREAM_CA_FILE", ca_file.as_ref());
    assert!(line.contains("upstream CA file"), "{line}");
    assert!(line.contains(&ca_file.display().to_string()), "{line}");
}

#[test]
fn serve_with_an_unusable_upstream_proxy_exits_in_one_line_without_its_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (line, everything) = serve_refusing(
        dir.path(),
        "MONOIZE_UPSTREAM_PROXY",
        "https://ops:hunter2hunter2@proxy.internal:3128".as_ref(),
    );
    assert!(line.contains("MONOIZE_UPSTREAM_PROXY"), "{line}");
    assert!(!everything.contains("hunter2"), "{everything}");
}

/// A command line that cannot be used is one line on stderr and exit code 2, as every other
/// failure is one line; `--version` prints the version.
#[test]
fn an_unusable_command_line_is_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (args, needles) in [
        (
            &["frobnicate"][..],
            &["unrecognized subcommand 'frobnicate'"][..],
        ),
        (&["srve"][..], &["'srve'", "'serve'"][..]),
        (&["serve", "--bogus"][..], &["'--bogus'"][..]),
        (&["serve", "--listen"][..], &["--listen"][..]),
        (&["user", "create"][..], &["required", "--username"][..]),
    ] {
        let mut command = monoize(dir.path());
        command.args(args);
        let (output, _) = run_to_exit(command);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let lines = stderr_lines(&output);
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].starts_with("monoize: "), "{args:?}: {lines:?}");
        for needle in needles {
            assert!(lines[0].contains(needle), "{args:?}: {lines:?}");
        }
        assert!(output.stdout.is_empty(), "{args:?}: {output:?}");
    }
    let mut command = monoize(dir.path());
    command.arg("--version");
    let (output, _) = run_to_exit(command);
    assert!(output.status.success(), "{output:?}");
    let version = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        version.trim(),
        format!("monoize {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_explains_the_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = monoize(dir.path());
    command.arg("--help");
    let (output, _) = run_to_exit(command);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "serve",
        "MONOIZE_DATABASE_DSN",
        "DATABASE_URL",
        "MONOIZE_LISTEN",
        "sqlite://",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
}

#[test]
fn plugin_check_passes_the_default_router_and_prints_one_line_per_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = monoize(dir.path());
    command.args([
        "plugin",
        "check",
        "router",
        monoize::plugins::embedded::paths::ROUTING,
        "--reference",
    ]);
    let (output, _) = run_to_exit(command);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.last(), Some(&"17 passed, 0 failed"), "{stdout}");
    assert!(
        lines.iter().take(17).all(|line| line.starts_with("ok ")),
        "{stdout}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "a check leaves no files behind"
    );
}

#[test]
fn plugin_check_fails_a_broken_router_with_a_non_zero_exit_and_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = monoize(dir.path());
    let fixture = monoize::plugins::embedded::paths::IGNORES_GROUPS_ROUTER;
    command
        .env_remove("RUST_LOG")
        .args(["plugin", "check", "router", fixture, "--json"]);
    let (output, _) = run_to_exit(command);
    assert!(!output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["failed"], 1, "{report}");
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|check| check["status"] == "failed")
        .filter_map(|check| check["name"].as_str())
        .collect();
    assert_eq!(failed, ["groups"]);
    assert_eq!(
        stderr_lines(&output),
        ["monoize: 1 of 10 checks did not pass"]
    );
}

#[test]
fn plugin_check_of_a_missing_file_is_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = monoize(dir.path());
    command.args(["plugin", "check", "router", "no-such.wasm"]);
    let (output, _) = run_to_exit(command);
    assert!(!output.status.success());
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("no-such.wasm"), "{lines:?}");
}

#[test]
fn serve_refuses_a_routing_plugin_with_a_forbidden_import() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = monoize(dir.path());
    command
        .arg("serve")
        .env("MONOIZE_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(
            "MONOIZE_ROUTING_PLUGIN",
            monoize::plugins::embedded::paths::LEGACY_IMPORT_ROUTER,
        );
    let (output, _) = run_to_exit(command);
    assert!(!output.status.success());
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("monoize:plugin/legacy-store@0.1.0"),
        "{lines:?}"
    );
}

#[test]
fn serve_uses_the_routing_plugin_it_is_given() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin = monoize::plugins::embedded::paths::SPREAD_ROUTER;
    let mut server = Server::start(
        dir.path(),
        &["serve"],
        &[("MONOIZE_ROUTING_PLUGIN", plugin)],
    );
    let (status, _) = server.wait_healthy();
    assert_eq!(status, 200);
    assert!(
        dir.path().join("data/plugin-cache").is_dir(),
        "compiled plugins are cached"
    );
}

#[test]
fn user_create_reads_the_password_from_stdin_and_the_user_logs_in_to_the_dashboard() {
    let dir = tempfile::tempdir().expect("temp dir");
    let password = "bootstrap-pass-9";
    let output = user_create(
        dir.path(),
        &["--username", "root_admin", "--role", "super_admin"],
        &format!("{password}\n"),
        &[],
    );
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0].len(), 36, "a user id: {stdout}");
    let everything = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(!everything.contains(password), "{everything}");

    let mut server = Server::start(dir.path(), &["serve"], &[]);
    let (status, _) = server.wait_healthy();
    assert_eq!(status, 200);
    let login = format!(r#"{{"username":"root_admin","password":"{password}"}}"#);
    let (status, body) =
        http_post_json(server.port, "/api/dashboard/auth/login", &login).expect("login answer");
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("login answers JSON");
    assert_eq!(body["user"]["id"], lines[0]);
    assert_eq!(body["user"]["role"], "super_admin");
    // The database has a user now, so self-registration is off.
    let (status, _) = http_post_json(
        server.port,
        "/api/dashboard/auth/register",
        r#"{"username":"latecomer","password":"latecomer-pass"}"#,
    )
    .expect("register answer");
    assert_eq!(status, 403);
    assert!(server.terminate().success());
}

#[test]
fn user_create_refuses_duplicates_and_bad_input_with_one_plain_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = [("MONOIZE_USER_PASSWORD", "alice-pass-123")];
    let created = user_create(
        dir.path(),
        &["--username", "alice", "--role", "user"],
        "",
        &env,
    );
    assert!(created.status.success(), "{created:?}");
    // Arguments, stdin, environment, and a word the one line of stderr must contain.
    type Case<'a> = (&'a [&'a str], &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 4] = [
        (
            &["--username", "alice", "--role", "admin"],
            "",
            &env,
            "taken",
        ),
        (
            &["--username", "a!", "--role", "user"],
            "",
            &env,
            "username",
        ),
        (
            &["--username", "carol", "--role", "user"],
            "short\n",
            &[],
            "password",
        ),
        (
            &["--username", "carol", "--role", "user"],
            "",
            &[],
            "no password",
        ),
    ];
    for (args, stdin, env, needle) in cases {
        let output = user_create(dir.path(), args, stdin, env);
        assert!(!output.status.success(), "{args:?}: {output:?}");
        let lines = stderr_lines(&output);
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(
            lines[0].starts_with("monoize: ") && lines[0].contains(needle),
            "{lines:?}"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    // A password is never an argument, and a role must be one of the three.
    for args in [
        &[
            "--username",
            "dave",
            "--role",
            "user",
            "--password",
            "dave-pass-123",
        ][..],
        &["--username", "dave", "--role", "root"][..],
    ] {
        let output = user_create(dir.path(), args, "dave-pass-123\n", &[]);
        assert!(!output.status.success(), "{args:?}");
    }
}
