//! The command line's own work beyond serving: the config summary and the tenant lifecycle.

pub mod summary;
pub mod tenant;
