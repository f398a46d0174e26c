//! A registry that could not be built: every call reports why.

use async_trait::async_trait;
use micro_registry::{Error, RegisterOptions, Registry, Service, WatchOptions, Watcher};

#[derive(Debug)]
pub(crate) struct UnavailableRegistry(pub(crate) Error);

#[async_trait]
impl Registry for UnavailableRegistry {
    async fn register(&self, _: &Service, _: RegisterOptions) -> Result<(), Error> {
        Err(self.0.clone())
    }
    async fn deregister(&self, _: &Service) -> Result<(), Error> {
        Err(self.0.clone())
    }
    async fn get_service(&self, _: &str) -> Result<Vec<Service>, Error> {
        Err(self.0.clone())
    }
    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        Err(self.0.clone())
    }
    async fn watch(&self, _: WatchOptions) -> Result<Watcher, Error> {
        Err(self.0.clone())
    }
    fn name(&self) -> &'static str {
        "unavailable"
    }
}
