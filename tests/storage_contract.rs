//! The conversation store contract on the JSON store.

#![cfg(feature = "ssr")]

#[path = "common/contract.rs"]
mod contract;

use std::sync::Arc;

use quantlab::storage::json::JsonStore;

#[test]
fn json_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract::run_all(Arc::new(JsonStore::open(dir.path()).unwrap()));
}
