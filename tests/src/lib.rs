//! vpblu's test harness: child processes and (with later parts) a real
//! Kubernetes control plane, the lab, and the §12 acceptance suite.

pub mod bench_goal;
pub mod binary_lifecycle;
pub mod built_tools;
pub mod chart;
pub mod chromium;
pub mod cluster;
pub mod cpu;
pub mod docs_reference;
pub mod kube_api;
pub mod kvm;
pub mod lab;
pub mod metrics_reference;
pub mod netns;
pub mod process;
pub mod prometheus;
pub mod stream_pki;
