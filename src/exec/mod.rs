//! TODO
pub struct Runner;
