//! One integration-test binary: the lab end to end (every fault, the healthy
//! mesh, every output format) and the command line.

mod cli;
mod findings;
mod fixes;
mod fleet;
mod flow_doc;
mod fuzz;
mod hardening;
mod hostile;
mod lab_faults;
mod layout;
mod profiles;
mod sockets;
mod support;
mod tui_keys;
mod workshop;
