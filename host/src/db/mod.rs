//! TODO(db)
