//! The store: lock, audit log, epochs, rollouts, caches (being written).
