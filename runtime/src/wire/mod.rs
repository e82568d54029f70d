//! What travels between processes over a byte stream: length-prefixed frames
//! and the authkey handshake. Shared by socket connections, the manager
//! server and its proxies.

pub mod auth;
pub mod frame;

pub use auth::{FrameTransport, client_handshake, server_handshake};
pub use frame::{DEFAULT_MAX_FRAME, FrameReader, write_frame};
