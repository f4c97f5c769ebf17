//! Loading a component for a world: compile it (through the engine's on-disk cache), refuse it
//! if it imports anything its world does not allow — naming the import — and link it once
//! into an `InstancePre`, from which every call instantiates.

use std::sync::Arc;

use wasmtime::component::{Component, InstancePre, Linker};

use super::engine::{PluginEngine, memories_of};
use super::store::PluginState;
use super::{PluginError, PluginErrorKind};

/// What every loaded plugin keeps, whatever its world.
#[derive(Clone)]
pub struct Loaded<P> {
    /// The plugin's name, in errors and logs.
    pub name: Arc<str>,
    /// The engine it runs on.
    pub engine: PluginEngine,
    /// Its world's typed pre-instance (`RouterPre`, `BillingPre`, …).
    pub pre: P,
    /// The linear memories one instance creates: its share of the pool per call.
    pub memories: u32,
}

/// Loads `bytes` as plugin `name` of `world` (the world's name, for messages): links deny-all
/// WASI and the world's imports (`add_world`), checks the component's imports against
/// `world_imports`, and types the pre-instance with `typed` (which fails when the component
/// does not export the world).
pub fn load_world<P>(
    engine: &PluginEngine,
    name: &str,
    bytes: &[u8],
    world: &str,
    world_imports: &[&str],
    add_world: impl FnOnce(&mut Linker<PluginState>) -> wasmtime::Result<()>,
    typed: impl FnOnce(InstancePre<PluginState>) -> wasmtime::Result<P>,
) -> Result<Loaded<P>, PluginError> {
    let link_error = |error: wasmtime::Error| {
        PluginError::new(
            name,
            PluginErrorKind::Engine(format!("cannot link: {error:#}")),
        )
    };
    let mut linker = Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_error)?;
    add_world(&mut linker).map_err(link_error)?;
    let instance_pre = load_component(engine, &linker, name, bytes, world_imports)?;
    let memories = memories_of(instance_pre.component());
    let pre = typed(instance_pre).map_err(|error| {
        PluginError::new(
            name,
            PluginErrorKind::Load(format!("does not export the {world} world: {error:#}")),
        )
    })?;
    Ok(Loaded {
        name: name.into(),
        engine: engine.clone(),
        pre,
        memories,
    })
}

/// WASI interfaces every plugin may import: what Rust's standard library needs on
/// `wasm32-wasip2`. The context behind them is deny-all (see `store`), and sockets and HTTP
/// are not among them at all.
const ALLOWED_WASI: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];

/// Compiles `bytes` as plugin `name`, checks its imports against `world_imports` (the
/// `monoize:plugin` interfaces of its world) and pre-links it with `linker`.
fn load_component(
    engine: &PluginEngine,
    linker: &Linker<PluginState>,
    name: &str,
    bytes: &[u8],
    world_imports: &[&str],
) -> Result<InstancePre<PluginState>, PluginError> {
    let load_error = |message: String| PluginError::new(name, PluginErrorKind::Load(message));
    if !bytes.starts_with(b"\0asm") {
        return Err(load_error(
            "not a WebAssembly component: the file does not begin with `\\0asm`".to_owned(),
        ));
    }
    let component = Component::new(engine.engine(), bytes)
        .map_err(|error| load_error(format!("not a valid component: {}", one_line(&error))))?;
    for (import, _) in component.component_type().imports(engine.engine()) {
        if !import_allowed(import, world_imports) {
            return Err(PluginError::new(
                name,
                PluginErrorKind::ForbiddenImport(import.to_owned()),
            ));
        }
    }
    linker
        .instantiate_pre(&component)
        .map_err(|error| load_error(format!("cannot be linked: {}", one_line(&error))))
}

/// An error with its causes on one line: wasmtime's parse errors can span several (byte
/// arrays printed one per line), and the CLI reports a failure in one line.
fn one_line(error: &wasmtime::Error) -> String {
    format!("{error:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a component may import `import` (`namespace:package/interface@version`).
fn import_allowed(import: &str, world_imports: &[&str]) -> bool {
    let (path, version) = import.split_once('@').unwrap_or((import, ""));
    if let Some(interface) = path.strip_prefix("monoize:plugin/") {
        return version == super::wit::latest::VERSION && world_imports.contains(&interface);
    }
    version.starts_with("0.2.") && ALLOWED_WASI.iter().any(|prefix| path.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::import_allowed;

    #[test]
    fn imports_are_checked_against_the_world_and_version() {
        let router = &["types", "routing-store", "health", "log"];
        assert!(import_allowed("monoize:plugin/routing-store@0.1.0", router));
        assert!(!import_allowed("monoize:plugin/legacy-store@0.1.0", router));
        assert!(!import_allowed(
            "monoize:plugin/routing-store@9.9.9",
            router
        ));
        assert!(import_allowed("wasi:cli/environment@0.2.6", router));
        assert!(!import_allowed("wasi:sockets/tcp@0.2.6", router));
        assert!(!import_allowed("wasi:http/outgoing-handler@0.2.6", router));
        assert!(!import_allowed("evil:thing/x", router));
    }
}
