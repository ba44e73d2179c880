//! sgemm wrapper: TODO(helper).
