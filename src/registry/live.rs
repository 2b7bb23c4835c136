//! The registry a running server serves from. Models made or deleted while it runs (the Models
//! page) change the list, so readers take a snapshot and the manager swaps in a re-read one.

use std::sync::{Arc, RwLock};

use super::{Registry, RegistryError};

/// A shared, replaceable registry. Clones share the same current value.
#[derive(Clone, Debug)]
pub struct LiveRegistry {
    current: Arc<RwLock<Arc<Registry>>>,
}

impl LiveRegistry {
    pub fn new(registry: Registry) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(registry))),
        }
    }

    /// The registry as it is now; later changes do not affect the snapshot.
    pub fn current(&self) -> Arc<Registry> {
        // A writer that panicked left a whole registry behind (the swap is one assignment).
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads models.toml and the models made here again and serves the result.
    ///
    /// # Errors
    /// The files no longer form a valid registry; the previous one stays in service.
    pub fn reload(&self) -> Result<Arc<Registry>, RegistryError> {
        let current = self.current();
        let Some(models_file) = &current.models_file else {
            return Err(RegistryError::Invalid(
                "this registry was not read from a file, so it cannot be re-read".into(),
            ));
        };
        let fresh = Arc::new(Registry::load(models_file, &current.models_dir)?);
        match self.current.write() {
            Ok(mut guard) => *guard = fresh.clone(),
            Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
        }
        Ok(fresh)
    }
}
