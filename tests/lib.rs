//! Helpers live in e2e/.
