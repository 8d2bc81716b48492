//! `sp2a-guest`: write an sp2a service (a WebAssembly component) in Rust.
//!
//! A service is a plain Rust `cdylib` built with
//! `cargo build --release --target wasm32-wasip2`. Its author writes two things:
//! the service's WIT interface, whose world includes `sp2a:rps/service`, and an
//! `impl` block for the generated `Guest` trait. This crate supplies the rest:
//! the `wit-bindgen` runtime, bindings for the host imports every sp2a node
//! offers (structured logging, service identity, live feeds) and the
//! [`service!`] macro that wires the author's world to them.
//!
//! ```ignore
//! // wit/hello.wit:
//! //   package example:hello@0.1.0;
//! //   interface greet { greet: func(name: string) -> string; }
//! //   world hello { include sp2a:rps/service@0.1.0; export greet; }
//!
//! sp2a_guest::service!({
//!     // the sp2a:rps WIT package first, then the service's own
//!     path: ["../../wit", "wit"],
//!     world: "example:hello/hello",
//! });
//!
//! struct Hello;
//!
//! impl exports::example::hello::greet::Guest for Hello {
//!     fn greet(name: String) -> String {
//!         sp2a_guest::info!("greeting {name}");
//!         format!("Hello, {name}!")
//!     }
//! }
//!
//! export!(Hello);
//! ```
//!
//! The services in this repository's `services/` directory are complete,
//! buildable examples.

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Bindings for the `sp2a:rps/service` world (the host's imports).
///
/// Service authors normally use [`log`], [`service_info`] and the logging
/// macros instead of these directly.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sp2a:rps/service",
        type_section_suffix: "sp2a-guest",
    });
}

pub use bindings::sp2a::rps::host::ServiceInfo;
pub use bindings::sp2a::rps::log::Level;

/// Generates bindings for a service's world, sharing this crate's bindings for
/// the `sp2a:rps` host interfaces.
///
/// Takes the same options as `wit_bindgen::generate!`; the world must include
/// `sp2a:rps/service@0.1.0`. After it, implement the generated `Guest` traits
/// and call the generated `export!` macro with the implementing type.
#[macro_export]
macro_rules! service {
    ({ $($options:tt)* }) => {
        $crate::__wit_bindgen::generate!({
            runtime_path: "::sp2a_guest::__wit_bindgen::rt",
            with: {
                "sp2a:rps/log@0.1.0": ::sp2a_guest::bindings::sp2a::rps::log,
                "sp2a:rps/host@0.1.0": ::sp2a_guest::bindings::sp2a::rps::host,
                "sp2a:rps/feed@0.1.0": ::sp2a_guest::bindings::sp2a::rps::feed,
            },
            $($options)*
        });
    };
}

/// Structured logging into the hosting node's log.
pub mod log {
    pub use crate::bindings::sp2a::rps::log::Level;

    /// Emit one record with key/value fields.
    pub fn event(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        crate::bindings::sp2a::rps::log::log(level, message, &fields);
    }

    /// Emit one record without fields.
    pub fn log(level: Level, message: &str) {
        crate::bindings::sp2a::rps::log::log(level, message, &[]);
    }
}

/// The identity of this service as the hosting node verified it
/// (name and version from the signed manifest, package content id).
pub fn service_info() -> ServiceInfo {
    bindings::sp2a::rps::host::service()
}

/// Live feeds: the segments of a feed the manifest declares
/// (`<feed name="live" publisher="ed25519:..."/>`), verified against its
/// source's key by the host, newest only.
pub mod feed {
    pub use crate::bindings::sp2a::rps::feed::{Error, FeedSegment as Segment};

    /// The newest segment number held (`None` before the first arrives).
    pub fn latest(name: &str) -> Result<Option<u64>, Error> {
        crate::bindings::sp2a::rps::feed::latest(name)
    }

    /// The oldest segment number still held.
    pub fn oldest(name: &str) -> Result<Option<u64>, Error> {
        crate::bindings::sp2a::rps::feed::oldest(name)
    }

    /// Segment `index`, if it is held.
    pub fn segment(name: &str, index: u64) -> Result<Option<Segment>, Error> {
        crate::bindings::sp2a::rps::feed::segment(name, index)
    }
}

/// Log at a given level with `format!` syntax: `sp2a_guest::log!(Level::Info, "x = {x}")`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log::log($level, &::std::format!($($arg)+))
    };
}

/// Log at `trace` level with `format!` syntax.
#[macro_export]
macro_rules! trace { ($($arg:tt)+) => { $crate::log!($crate::Level::Trace, $($arg)+) }; }
/// Log at `debug` level with `format!` syntax.
#[macro_export]
macro_rules! debug { ($($arg:tt)+) => { $crate::log!($crate::Level::Debug, $($arg)+) }; }
/// Log at `info` level with `format!` syntax.
#[macro_export]
macro_rules! info { ($($arg:tt)+) => { $crate::log!($crate::Level::Info, $($arg)+) }; }
/// Log at `warn` level with `format!` syntax.
#[macro_export]
macro_rules! warn { ($($arg:tt)+) => { $crate::log!($crate::Level::Warn, $($arg)+) }; }
/// Log at `error` level with `format!` syntax.
#[macro_export]
macro_rules! error { ($($arg:tt)+) => { $crate::log!($crate::Level::Error, $($arg)+) }; }
