//! docpipe: a document pipeline for investigators. See README.md for the architecture.

pub mod amqp;
pub mod blob;
pub mod cli;
pub mod config;
pub mod error;
pub mod evidence;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod pypi;
pub mod registry;
pub mod resubmit;
pub mod retry;
pub mod runner;
pub mod schema;
pub mod stages;
pub mod store;
pub mod web;
