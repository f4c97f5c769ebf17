//! The plugin layer's one error type. A plugin that *refuses* something answers with its
//! world's WIT error variant; this type is for what goes wrong *around* a plugin: it could
//! not be loaded, it trapped, it ran out of time or memory, or it broke the contract.

use std::fmt;

/// What went wrong with a plugin, naming the plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin `{plugin}` {kind}")]
pub struct PluginError {
    /// The plugin's name (`default-router`, or the file it was loaded from).
    pub plugin: String,
    /// What happened.
    pub kind: PluginErrorKind,
}

/// The ways a plugin fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginErrorKind {
    /// The engine itself could not be set up.
    Engine(String),
    /// The bytes are not a loadable component for the world.
    Load(String),
    /// The component imports something its world does not allow.
    ForbiddenImport(String),
    /// The component trapped.
    Trap(String),
    /// The call ran past the time bound.
    Timeout {
        /// The bound, in milliseconds.
        limit_ms: u128,
    },
    /// The plugin tried to grow its memory past the cap.
    OutOfMemory {
        /// The cap, in bytes.
        limit_bytes: usize,
    },
    /// The plugin answered something the host refuses (an illegal plan, a malformed value).
    ContractViolation(String),
}

impl fmt::Display for PluginErrorKind {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginErrorKind::Engine(message) => write!(out, "cannot run: {message}"),
            PluginErrorKind::Load(message) => write!(out, "cannot be loaded: {message}"),
            PluginErrorKind::ForbiddenImport(import) => {
                write!(out, "imports `{import}`, which its world does not allow")
            }
            PluginErrorKind::Trap(message) => write!(out, "trapped: {message}"),
            PluginErrorKind::Timeout { limit_ms } => write!(out, "timed out after {limit_ms} ms"),
            PluginErrorKind::OutOfMemory { limit_bytes } => {
                write!(out, "ran out of memory (limit {} MiB)", limit_bytes >> 20)
            }
            PluginErrorKind::ContractViolation(message) => {
                write!(out, "broke its contract: {message}")
            }
        }
    }
}

impl PluginError {
    /// An error of `kind` in `plugin`.
    pub fn new(plugin: impl Into<String>, kind: PluginErrorKind) -> Self {
        PluginError {
            plugin: plugin.into(),
            kind,
        }
    }

    /// An engine failure, before any plugin is involved.
    pub fn engine(message: String) -> Self {
        PluginError::new("<engine>", PluginErrorKind::Engine(message))
    }

    /// A short stable label of the kind, for metrics and JSON.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            PluginErrorKind::Engine(_) => "engine",
            PluginErrorKind::Load(_) => "load",
            PluginErrorKind::ForbiddenImport(_) => "forbidden_import",
            PluginErrorKind::Trap(_) => "trap",
            PluginErrorKind::Timeout { .. } => "timeout",
            PluginErrorKind::OutOfMemory { .. } => "out_of_memory",
            PluginErrorKind::ContractViolation(_) => "contract_violation",
        }
    }
}
