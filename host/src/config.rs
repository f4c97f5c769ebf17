//! TODO(config)
