//! One integration-test binary: the lab end to end (every fault, the healthy
//! mesh, every output format) and the command line.

mod cli;
mod findings;
mod fixes;
mod fuzz;
mod hardening;
mod hostile;
mod lab_faults;
mod layout;
mod profiles;
mod support;
