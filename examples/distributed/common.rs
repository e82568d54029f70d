//! What both distributed examples share besides the `Tally`: the message
//! types and how they read their settings.

/// A task: a number to square.
pub type Task = u64;
/// A result: the number, its square, and the worker's pid.
pub type Outcome = (u64, u64, i32);
/// What a worker puts on the hello queue once it is connected: its pid.
pub type Hello = i32;

/// Command-line argument `n`, else the environment variable `env`, else `default`.
pub fn arg(n: usize, env: &str, default: &str) -> String {
    std::env::args()
        .nth(n)
        .or_else(|| std::env::var(env).ok())
        .unwrap_or_else(|| default.to_string())
}
