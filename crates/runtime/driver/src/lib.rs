//! Running service instances: the runtime-driver contract ([`driver`]), the local-process
//! driver and its shim ([`local`]), health checks ([`health`]), logs ([`logs`]), ports
//! ([`ports`]), and the supervisor that keeps an environment's services running
//! ([`supervisor`]).

#[cfg(feature = "compliance")]
pub mod compliance;
pub mod driver;
pub mod health;
pub mod local;
pub mod logs;
pub mod ports;
pub mod supervisor;

pub use driver::{Driver, DriverError, Instance, InstanceSpec};
pub use local::{LocalDriver, ShimCommand};
pub use supervisor::{Release, Runtime, RuntimeOptions, ServiceStatus};
