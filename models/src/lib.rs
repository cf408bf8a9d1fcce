//! Synchronous engines for docpipe. Nothing here knows about queues or async runtimes:
//! the service wraps these in stages that run on threads owning their engines.

pub mod ocr;
pub mod extract;
pub mod faithful;
pub mod langid;
pub mod llm;
pub mod mt;
pub mod rouge;
pub mod segment;
pub mod sniff;
pub mod spm;
pub mod summarize;
pub mod text;
