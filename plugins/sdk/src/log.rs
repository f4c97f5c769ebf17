//! Lines for the host's log (`monoize:plugin/log`), tagged by the host with the plugin's name and
//! the request in flight. Messages longer than 4 KiB are cut by the host.

// Every world imports `log`; with several world features on, any one binding writes the same
// import, so the first enabled one is used.
#[cfg(feature = "router")]
use crate::__private::router::monoize::plugin::log as imp;

#[cfg(all(not(feature = "router"), feature = "billing"))]
use crate::__private::billing::monoize::plugin::log as imp;

#[cfg(all(
    not(feature = "router"),
    not(feature = "billing"),
    feature = "dashboard"
))]
use crate::__private::dashboard::monoize::plugin::log as imp;

/// How severe a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Fine detail.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal events.
    Info,
    /// Something the operator should look at.
    Warn,
    /// A failure.
    Error,
}

impl From<Level> for imp::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => imp::Level::Trace,
            Level::Debug => imp::Level::Debug,
            Level::Info => imp::Level::Info,
            Level::Warn => imp::Level::Warn,
            Level::Error => imp::Level::Error,
        }
    }
}

/// Writes one line at `level`.
pub fn write(level: Level, message: &str) {
    imp::write(level.into(), message);
}

/// Writes one line at [`Level::Trace`].
pub fn trace(message: &str) {
    write(Level::Trace, message);
}

/// Writes one line at [`Level::Debug`].
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Writes one line at [`Level::Info`].
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Writes one line at [`Level::Warn`].
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Writes one line at [`Level::Error`].
pub fn error(message: &str) {
    write(Level::Error, message);
}
