mod listener;
mod socket;
mod wait;

pub use listener::{Address, Listener, client};
pub use socket::SocketConnection;
pub use wait::{Waitable, wait};
