//! Builds the guest workspace (`plugins/`: the SDK, the default plugins and the hostile test
//! components) for `wasm32-wasip2`, once per host build, and writes
//! `$OUT_DIR/guest_components.rs` for `src/plugins/embedded.rs`:
//!
//! - `ROUTING`, `BILLING`, `DASHBOARD`: the default router's, billing plugin's and dashboard
//!   plugin's bytes, embedded in the binary;
//! - `paths::*`: the absolute path of every component built, one constant per `cdylib`, named
//!   after its crate in SCREAMING_SNAKE_CASE without a `monoize_` prefix (`trap-router` →
//!   `TRAP_ROUTER`, `monoize-routing` → `ROUTING`), for tests to load.
//!
//! The nested build has its own target directory (`target/guest`) and a cleaned environment, so
//! it never waits on the outer build's lock nor inherits flags meant for the host target.

use std::collections::BTreeMap;
use std::env;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const GUEST_TARGET: &str = "wasm32-wasip2";

/// The default plugins embedded in the binary: the constant, the artifact, the crate's folder.
const EMBEDDED: &[(&str, &str, &str)] = &[
    ("ROUTING", "monoize_routing", "plugins/routing"),
    ("BILLING", "monoize_billing", "plugins/billing"),
    (
        "DASHBOARD",
        "monoize_dashboard_plugin",
        "plugins/dashboard-component",
    ),
];

/// Variables cargo sets for build scripts or that carry flags for the outer build; any of them
/// would misconfigure the nested build (host RUSTFLAGS on a wasm target, clippy-driver as the
/// compiler, the outer target dir and its lock, the outer jobserver).
const REMOVED_VARS: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
    "RUSTC_LINKER",
    "CARGO_PRIMARY_PACKAGE",
];

/// Prefixes of variables removed for the same reason.
const REMOVED_PREFIXES: &[&str] = &["CARGO_PROFILE_", "CARGO_FEATURE_", "CARGO_CFG_"];

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let repo = manifest_dir
        .parent()
        .ok_or("host/ has no parent directory")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let guest_manifest = repo.join("plugins").join("Cargo.toml");
    let target_dir = repo.join("target").join("guest");

    watch_sources(&repo)?;
    check_target_installed()?;
    let artifacts = build_guests(&guest_manifest, &target_dir)?;
    let generated = generate(&artifacts)?;
    let file = out_dir.join("guest_components.rs");
    // Rewriting an unchanged file would only make the host crate recompile.
    if fs::read_to_string(&file).ok().as_deref() != Some(generated.as_str()) {
        fs::write(file, generated)?;
    }
    Ok(())
}

/// Reruns this script when the WIT, a guest crate or the guest workspace changes; never because
/// of build output (`plugins/target`, `target/guest`).
fn watch_sources(repo: &Path) -> Result<(), Box<dyn Error>> {
    let mut watched = vec![
        repo.join("wit"),
        repo.join("plugins").join("Cargo.toml"),
        repo.join("plugins").join("Cargo.lock"),
        repo.join("tests").join("components"),
    ];
    for parent in [repo.join("plugins"), repo.join("examples")] {
        for crate_dir in crate_dirs(&parent)? {
            for item in ["Cargo.toml", "src", "build.rs", "wit"] {
                let path = crate_dir.join(item);
                if path.exists() {
                    watched.push(path);
                }
            }
        }
    }
    for path in watched {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Ok(())
}

/// The directories directly under `parent` that hold a `Cargo.toml`.
fn crate_dirs(parent: &Path) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let mut dirs = Vec::new();
    if !parent.is_dir() {
        return Ok(dirs);
    }
    for entry in fs::read_dir(parent)? {
        let path = entry?.path();
        if path.join("Cargo.toml").is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Fails with one clear line when the standard library for the guest target is missing.
fn check_target_installed() -> Result<(), Box<dyn Error>> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .output()
        .map_err(|error| {
            format!("cannot run `{rustc}` to look for the {GUEST_TARGET} target: {error}")
        })?;
    let libdir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || libdir.is_empty() || !Path::new(&libdir).is_dir() {
        return Err(format!(
            "the {GUEST_TARGET} target is not installed, and Monoize's plugins are built for it: \
             run `rustup target add {GUEST_TARGET}`"
        )
        .into());
    }
    Ok(())
}

/// Builds the guest workspace and answers each `cdylib` artifact's crate name and `.wasm` path.
fn build_guests(
    manifest: &Path,
    target_dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, Box<dyn Error>> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--release")
        .args(["--target", GUEST_TARGET])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--workspace")
        .arg("--target-dir")
        .arg(target_dir)
        // Artifacts as JSON on stdout; diagnostics rendered for humans on stderr.
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, _) in env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if REMOVED_VARS.contains(&name)
            || REMOVED_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name);
        }
    }
    let output = command
        .output()
        .map_err(|error| format!("cannot run `{cargo}` to build the guest components: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the guest components failed ({}); the compiler's messages are above. \
             To reproduce: cargo build --release --target {GUEST_TARGET} --manifest-path {} --workspace",
            output.status,
            manifest.display()
        )
        .into());
    }
    let stdout = String::from_utf8(output.stdout)?;
    let mut artifacts = BTreeMap::new();
    for line in stdout.lines() {
        if let Some((name, path)) = cdylib_artifact(line) {
            artifacts.insert(name, path);
        }
    }
    if artifacts.is_empty() {
        return Err("the guest build succeeded but reported no .wasm artifact".into());
    }
    Ok(artifacts)
}

/// The crate name and `.wasm` file of a `compiler-artifact` message for a `cdylib` target.
///
/// Reads cargo's JSON line with plain string search: the fields it needs are flat strings, and
/// the host's build dependencies stay empty.
fn cdylib_artifact(line: &str) -> Option<(String, PathBuf)> {
    if !line.contains(r#""reason":"compiler-artifact""#) {
        return None;
    }
    let target = json_object_after(line, r#""target":"#)?;
    let kinds = json_array_after(target, r#""kind":"#)?;
    if !kinds.split(',').any(|kind| kind.trim() == r#""cdylib""#) {
        return None;
    }
    let filenames = json_array_after(line, r#""filenames":"#)?;
    let path = filenames
        .split(r#"",""#)
        .map(|name| name.trim_matches(|c| c == '"' || c == '[' || c == ']'))
        .find(|name| name.ends_with(".wasm"))?;
    let path = PathBuf::from(unescape_json(path));
    let name = path.file_stem()?.to_str()?.to_owned();
    Some((name, path))
}

/// The text of the `{...}` object following `key`, braces included (no nested strings with
/// braces are expected in cargo's target object, whose values are names, kinds and a path).
fn json_object_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let rest = text.get(start..)?;
    let mut depth = 0usize;
    for (index, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return rest.get(..=index);
                }
            }
            _ => {}
        }
    }
    None
}

/// The text inside the `[...]` array following `key`.
fn json_array_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let rest = text.get(start..)?.strip_prefix('[')?;
    let end = rest.find(']')?;
    rest.get(..end)
}

fn unescape_json(text: &str) -> String {
    text.replace(r#"\""#, "\"").replace(r"\\", r"\")
}

/// `trap_router` → `TRAP_ROUTER`, `monoize_routing` → `ROUTING`.
fn const_name(artifact: &str) -> String {
    let stem = artifact.strip_prefix("monoize_").unwrap_or(artifact);
    stem.replace('-', "_").to_uppercase()
}

fn generate(artifacts: &BTreeMap<String, PathBuf>) -> Result<String, Box<dyn Error>> {
    let mut out = String::new();
    writeln!(
        out,
        "// @generated by host/build.rs from the guest workspace (plugins/)."
    )?;
    for (constant, artifact, folder) in EMBEDDED {
        let path = artifacts.get(*artifact).ok_or_else(|| {
            format!("the guest build produced no {artifact}.wasm (is {folder} a member?)")
        })?;
        let path = path_str(path)?;
        writeln!(out)?;
        writeln!(
            out,
            "/// The default plugin `{folder}`, embedded in the binary."
        )?;
        writeln!(
            out,
            "pub const {constant}: &[u8] = include_bytes!({path:?});"
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "/// Absolute paths of every component the guest build produced, one per `cdylib`."
    )?;
    writeln!(out, "pub mod paths {{")?;
    for (artifact, path) in artifacts {
        let path = path_str(path)?;
        writeln!(
            out,
            "    /// `{artifact}.wasm`, built from the guest workspace."
        )?;
        writeln!(
            out,
            "    pub const {}: &str = {path:?};",
            const_name(artifact)
        )?;
    }
    writeln!(out, "}}")?;
    Ok(out)
}

fn path_str(path: &Path) -> Result<&str, Box<dyn Error>> {
    path.to_str()
        .ok_or_else(|| format!("component path is not UTF-8: {}", path.display()).into())
}
