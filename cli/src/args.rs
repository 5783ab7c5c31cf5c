//! The flags shared by the server commands live in `shale-flags`, so that
//! `shale-lambda` reads the same names from the same environment.

pub use shale_flags::*;
pub use shale_kafka::KafkaArgs;
