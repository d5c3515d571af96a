//! The use cases on a test's store, in one call: `store.app()`.

use tre_app::App;
use tre_store::Store;

/// A test's way to the application layer from the store it holds.
pub trait UseCases {
    /// A fresh [`App`] on this store. It keeps no copies between calls: a
    /// test of what a process's copies do holds one `App` instead.
    fn app(&self) -> App;
}

impl UseCases for Store {
    fn app(&self) -> App {
        App::new(self.clone())
    }
}
