#![no_main]
//! Fuzz target `clusterz`: see tests/fuzz/targets.rs.
use libfuzzer_sys::fuzz_target;

#[path = "../targets.rs"]
#[allow(dead_code)]
mod targets;

fuzz_target!(|data: &[u8]| targets::clusterz(data));
