//! Processes that run Rust functions: Python's `Process`, start methods and helpers.
//!
//! A target is any non-capturing `fn(A) -> R` whose argument and result are
//! [`Shareable`](crate::Shareable), or an `fn() -> R` ([`Process::from_fn`]). Under [`StartMethod::Spawn`] (the default)
//! the child re-executes the current binary: [`init`] as the first line of
//! `main` (or [`init_before_main!`](crate::init_before_main) in test files)
//! runs the target there and exits. Under [`StartMethod::Fork`] the child is a
//! fork, and a capturing closure may be a target too.
//!
//! Process ids are `i32` throughout (libc's `pid_t`): `Process::pid`,
//! `current_process().pid`, `parent_process()`, `active_children`,
//! `Pool::worker_pids`, `Manager::pid`, lock owners and the pids in errors.

mod child;
mod child_process;
mod current;
mod fork_hooks;
mod forkserver;
mod initializer;
pub(crate) mod launch;
mod registry;
mod sentinel;
pub(crate) mod start_method;

pub(crate) use child::at_normal_end;
pub use child::init;
pub use child_process::Process;
pub(crate) use child_process::handing_to_fork_child;
pub(crate) use current::program_root;
pub use current::{AuthKey, CurrentProcess, ParentProcess, current_process, parent_process};
pub use fork_hooks::{ForkHook, register_fork_hook};
pub use forkserver::server_pid as forkserver_pid;
pub use initializer::Initializer;
pub(crate) use launch::panic_message as panic_text;
pub use registry::{ChildInfo, active_children};
pub use sentinel::Sentinel;
pub(crate) use start_method::start_method_for_pool;
pub use start_method::{
    Context, StartMethod, force_start_method, get_all_start_methods, get_context, get_start_method,
    set_start_method,
};

/// The number of CPUs this process may use (Python's `cpu_count()`).
pub fn cpu_count() -> usize {
    crate::sys::process::cpu_count()
}

/// Runs [`init`] before `main`, so spawned children work in test binaries
/// and other programs whose `main` you do not write (one line per binary).
///
/// ```
/// // At the top of tests/my_test.rs:
/// multiproc::init_before_main!();
/// ```
#[macro_export]
macro_rules! init_before_main {
    () => {
        #[used]
        #[unsafe(link_section = ".init_array")]
        static __MULTIPROC_INIT_BEFORE_MAIN: extern "C" fn() = {
            extern "C" fn __multiproc_init_before_main() {
                $crate::init();
            }
            __multiproc_init_before_main
        };
    };
}
