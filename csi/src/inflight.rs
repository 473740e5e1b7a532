//! One operation at a time per volume (or per name): CSI spec, "Concurrency": a plugin that
//! receives a call for a volume while another is in progress for it SHOULD answer `ABORTED`,
//! and the CO retries. A guard holds the key until it is dropped, also when the call fails.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tonic::Status;

/// The keys of the operations in progress.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<String>>>);

/// Holds one key; releases it when dropped.
pub struct Guard {
    set: InFlight,
    key: String,
}

impl InFlight {
    /// Takes `key`, or answers ABORTED when it is taken.
    pub fn take(&self, key: &str) -> Result<Guard, Status> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !s.insert(key.to_string()) {
            return Err(Status::aborted(format!(
                "an operation on {key:?} is in progress"
            )));
        }
        Ok(Guard {
            set: self.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut s = self.set.0.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_take_is_aborted_until_the_first_is_dropped() {
        let f = InFlight::default();
        let g = f.take("v1").unwrap();
        assert_eq!(f.take("v1").err().unwrap().code(), tonic::Code::Aborted);
        assert!(f.take("v2").is_ok());
        drop(g);
        assert!(f.take("v1").is_ok());
    }
}
