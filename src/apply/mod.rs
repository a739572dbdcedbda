//! Apply: the plan made real on the host, one step at a time.

mod port;

pub use port::{
    HostAnswer, HostMethod, HostPort, HostRequest, HttpHost, InProcessHost, StepOperation,
};
