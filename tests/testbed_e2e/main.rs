//! End-to-end tests against the real test bed (`tests/testbed/up`): two real
//! kube-apiservers and a real istiod. Each test injects one fault with
//! kubectl, traces it with meshtrace, compares the result with the lab's
//! simulation of the same fault, and asks the real istiod for a certificate
//! as the gateway would, to check that meshtrace's verdict matches istiod's.
//!
//! Gate: without `MESHTRACE_TESTBED_KUBECONFIG` every test prints
//! "test bed not up: skipped" and passes, unless `MESHTRACE_TESTBED_REQUIRED=1`
//! (CI), which makes it fail instead.
//!
//! The tests share one test bed, so they take a global lock; every change is
//! reverted by a guard (also when an assertion fails) and the next test starts
//! only once a healthy trace passes again.
//!
//! ```sh
//! tests/testbed/up
//! set -a; . /tmp/meshtrace-testbed/env; set +a
//! cargo test --test testbed -- --test-threads=1
//! ```

mod agent;
mod bed;
mod check;
mod exposure;
mod faults;
mod fleet;
mod healthy;
mod netfaults;
mod portable;
mod probe;
mod profiles;
mod webhook;
mod xds;
mod zz_destructive;
