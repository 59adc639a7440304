//! Placeholder: implemented in issue 4.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{DedupStore, Owner, Reservation, Settled, StoreError};
use crate::config::DedupConfig;

pub struct RedisStore;

impl RedisStore {
    pub async fn connect(_cfg: &DedupConfig) -> Result<Arc<Self>, StoreError> {
        Err(StoreError("not implemented".into()))
    }
}

#[async_trait]
impl DedupStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }
    async fn reserve(&self, _id: &str, _lease: Duration) -> Result<Reservation, StoreError> {
        Err(StoreError("not implemented".into()))
    }
    async fn commit(&self, _id: &str, _o: &Owner, _ttl: Duration) -> Result<Settled, StoreError> {
        Err(StoreError("not implemented".into()))
    }
    async fn release(&self, _id: &str, _o: &Owner) -> Result<Settled, StoreError> {
        Err(StoreError("not implemented".into()))
    }
    async fn check(&self) -> Result<(), StoreError> {
        Err(StoreError("not implemented".into()))
    }
}
