//! Owns the Kubernetes wire types wasmgate reads and writes (AdmissionReview, metav1.Status,
//! audit Event and EventList) and the small parsers the protocol needs (Go durations). No I/O, no
//! knowledge of plugins.

mod admission;
pub mod audit;
mod duration;

pub use admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, DecodeError, GroupVersionKind,
    GroupVersionResource, Operation, ReviewVersion, Status, UserInfo,
};
pub use duration::{DurationError, parse_go_duration};
