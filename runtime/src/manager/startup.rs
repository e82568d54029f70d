//! How a manager's server starts: the process a `Manager` or a
//! `BaseManager` starts it in (the server side of Python's `Manager()` and
//! `BaseManager(address=…, authkey=…)`), and what the server makes before
//! it serves: the registry of names, a `BaseManager`'s named objects, the
//! user objects either registered.
//!
//! The registry is the server's first object ([`REGISTRY`]): a dict from
//! each registered name to a [`NamedEntry`] (the object's id, or a
//! factory's number with [`FACTORY_BIT`] set, its type's fingerprint and
//! name). Clients read it to find a name's object and check its type; the
//! client side (`Manager`, `BaseManager`, `RemoteManager`, the proxies) is
//! in the `multiproc-proxy` crate.

use std::time::Duration;

use crate::codec::Shareable;
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::manager::client::{self, unexpected};
use crate::manager::core::TypeTag;
use crate::manager::protocol::{
    ArchivedResponse, Blob, Call, LocalAddress, Method, ObjectId, ObjectKind, Request,
    access_response, remote_error,
};
use crate::manager::server::{ServeOptions, Server, ServerBoot, random_token, serve_with};
use crate::manager::user::RemoteObject;
use crate::process::{Initializer, Process, StartMethod};
use crate::shm::fingerprint_str;
use crate::sys;

/// How long a new server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server process is waited for after it was told to end (or
/// killed, having failed to start) before it is killed.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The registry dict's id: the first object a server creates.
pub const REGISTRY: ObjectId = 1;

/// What the registry stores for a name: the object, its type fingerprint and name.
pub type NamedEntry = (u64, u64, String);

/// The type tag the registry dict is created with: the one a
/// `DictProxy<String, NamedEntry>` checks.
pub fn registry_tag() -> TypeTag {
    TypeTag::new(format!(
        "DictProxy<{}, {}>",
        std::any::type_name::<String>(),
        std::any::type_name::<NamedEntry>()
    ))
}

/// One registered name: an object of `kind` the server makes when it starts.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = rkyv)]
pub struct Named {
    /// The name clients ask for.
    pub name: String,
    /// The kind of object to make.
    pub kind: ObjectKind,
    /// The kind's parameter (a queue's maxsize, a semaphore's value, a
    /// barrier's parties; 0 for the others).
    pub arg: u64,
    /// The fingerprint of the proxy type that will call it.
    pub fingerprint: u64,
    /// That proxy type's name.
    pub type_name: String,
}

/// A registered user name, and whether it names a factory (else one object).
pub type UserName = (String, bool);

/// Set in the registry's id of a factory (never an object's id): the rest
/// is the factory's number.
pub const FACTORY_BIT: u64 = 1 << 61;

/// The user types a `BaseManager` registered (a list built by its
/// `register_object`, one [`RemoteObject`] at a time).
pub trait UserTypes: 'static {
    #[doc(hidden)]
    fn install(
        server: &mut Server,
        names: &[UserName],
    ) -> Result<Vec<(String, ObjectId, &'static str)>>;
}

impl UserTypes for () {
    fn install(_: &mut Server, _: &[UserName]) -> Result<Vec<(String, ObjectId, &'static str)>> {
        Ok(Vec::new())
    }
}

impl<T: RemoteObject, U: UserTypes> UserTypes for (T, U) {
    fn install(
        server: &mut Server,
        names: &[UserName],
    ) -> Result<Vec<(String, ObjectId, &'static str)>> {
        let Some(((last, factory), rest)) = names.split_last() else {
            return Err(Error::InvalidState("user object names out of step".into()));
        };
        let mut made = U::install(server, rest)?;
        let id = if *factory {
            FACTORY_BIT | server.add_user_factory(T::TYPE_NAME, Box::new(|| Box::new(T::default())))
        } else {
            server.add_user_object(Box::new(T::default()))
        };
        made.push((last.clone(), id, T::TYPE_NAME));
        Ok(made)
    }
}

/// What a remote manager's server process is started with.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = rkyv)]
struct RemoteArgs {
    options: ServeOptions,
    named: Vec<Named>,
    user_names: Vec<UserName>,
}

/// A manager's server started in a child process, listening.
#[derive(Debug)]
pub struct StartedServer {
    /// The server process.
    pub process: Process<()>,
    /// Its local address (its socket name and identity).
    pub address: LocalAddress,
    /// The TCP port it listens on (0 if none).
    pub tcp_port: u16,
    /// The port its Python listener listens on (0 if none).
    pub python_port: u16,
}

/// Starts `target` in a child process named `name` (with `method`, or the
/// default start method) and waits until the server it runs listens.
///
/// A server that cannot start (its address in use, say) is its error here,
/// and its process is gone.
fn start_server<A>(
    name: &str,
    target: fn((ServerBoot, A)),
    args: A,
    method: Option<StartMethod>,
) -> Result<StartedServer>
where
    (ServerBoot, A): Shareable,
{
    let boot = ServerBoot::new()?;
    let mut p = Process::new(target, (boot.clone(), args))
        .name(name)
        .daemon(true);
    if let Some(m) = method {
        p = p.start_method(m);
    }
    client::forking_server(|| p.start())?;
    let address = match boot.wait_ready(|| p.is_alive(), Deadline::after(START_TIMEOUT)) {
        Ok(a) => a,
        Err(e) => {
            let _ = p.kill();
            // A spawned server that ran the program's `main` instead (no
            // `multiproc::init()` first) said so before it died: say it too.
            if let Err(missing @ Error::InitMissing { .. }) = p.join_timeout(EXIT_TIMEOUT) {
                return Err(missing);
            }
            return Err(e);
        }
    };
    Ok(StartedServer {
        process: p,
        address,
        tcp_port: boot.tcp_port(),
        python_port: boot.python_port(),
    })
}

/// What a local manager's server process is started with: its options, its
/// initializer, the names of its user objects.
type LocalArgs = (ServeOptions, Option<Initializer>, Vec<UserName>);

/// Starts a local manager's server (Python's `Manager()`) in a child
/// process: it runs `init`, if any, makes the user objects `U` under
/// `user_names`, if any, then serves.
pub fn start_local<U: UserTypes>(
    options: ServeOptions,
    init: Option<Initializer>,
    user_names: Vec<UserName>,
    method: Option<StartMethod>,
) -> Result<StartedServer> {
    start_server(
        "SyncManager",
        serve_local::<U>,
        (options, init, user_names),
        method,
    )
}

/// The local manager's server process: runs the initializer, if any, makes
/// the user objects `U`, if any, then serves.
fn serve_local<U: UserTypes>((boot, (options, init, user_names)): (ServerBoot, LocalArgs)) {
    ignore_interrupts();
    if let Some(init) = init {
        // SAFETY: made by `ManagerBuilder::initializer` in the process that
        // started this one, from this same binary (spawn checked its
        // identity; fork and forkserver children are copies).
        if let Err(e) = unsafe { init.run() } {
            tracing::error!("manager initializer failed: {e}");
            boot.publish_failed(&e);
            return;
        }
    }
    if user_names.is_empty() {
        return serve_with((boot, options));
    }
    let server = Server::bind(boot.token(), &options).and_then(|mut s| {
        install_user_objects::<U>(&mut s, &user_names)?;
        Ok(s)
    });
    match server {
        Ok(s) => {
            boot.publish_ready(&s);
            drop(boot);
            s.serve_forever();
        }
        Err(e) => {
            tracing::error!("manager server cannot start: {e}");
            boot.publish_failed(&e);
        }
    }
}

/// Starts a remote manager's server (Python's `BaseManager(…).start()`)
/// in a child process: it makes the registry, the `named` objects and the
/// user objects `U` under `user_names`, then serves.
pub fn start_remote<U: UserTypes>(
    options: ServeOptions,
    named: Vec<Named>,
    user_names: Vec<UserName>,
    method: Option<StartMethod>,
) -> Result<StartedServer> {
    start_server(
        "BaseManager",
        serve_remote::<U>,
        RemoteArgs {
            options,
            named,
            user_names,
        },
        method,
    )
}

/// Binds a server in this process, with the registry, the `named` objects
/// and the user objects `U` under `user_names` made; it serves once its
/// owner calls [`Server::serve_forever`].
pub fn bind<U: UserTypes>(
    options: &ServeOptions,
    named: &[Named],
    user_names: &[UserName],
) -> Result<Server> {
    let mut server = Server::bind(random_token(), options)?;
    let ids = make_named(&mut server, named)?;
    serve_python_queues(&mut server, options, &ids)?;
    make_user_objects::<U>(&mut server, user_names)?;
    Ok(server)
}

/// The remote manager's server process.
fn serve_remote<U: UserTypes>((boot, args): (ServerBoot, RemoteArgs)) {
    ignore_interrupts();
    let server = Server::bind(boot.token(), &args.options).and_then(|mut s| {
        let ids = make_named(&mut s, &args.named)?;
        serve_python_queues(&mut s, &args.options, &ids)?;
        make_user_objects::<U>(&mut s, &args.user_names)?;
        Ok(s)
    });
    match server {
        Ok(s) => {
            boot.publish_ready(&s);
            drop(boot);
            s.serve_forever();
        }
        Err(e) => {
            tracing::error!("remote manager server cannot start: {e}");
            boot.publish_failed(&e);
        }
    }
}

/// A manager's server process ignores `SIGINT`, as Python's does: it
/// shares its program's process group, and a terminal's Ctrl-C meant for
/// the program (which may catch it to shut down in order, using its
/// proxies) must not end the server under it. `SIGTERM` and
/// a manager's `shutdown` still end it.
fn ignore_interrupts() {
    if let Err(e) = sys::signal::set_ignored(sys::signal::INT, true) {
        tracing::warn!("a manager server cannot ignore SIGINT: {e}");
    }
}

fn expect_created(server: &mut Server, req: &Request<'_>) -> Result<ObjectId> {
    let out = server.request(req)?;
    match access_response(&out)? {
        ArchivedResponse::Created(id) => Ok(id.to_native()),
        ArchivedResponse::Error(e) => Err(remote_error(e)),
        _ => Err(unexpected()),
    }
}

fn register_name(server: &mut Server, name: &str, entry: NamedEntry) -> Result<()> {
    let key = name.to_string().encode()?;
    let value = entry.encode()?;
    let out = server.request(&Request::Call(Call {
        object: REGISTRY,
        method: Method::DictInsert as u32,
        index: 0,
        key: Some(Blob::plain(&key)),
        value: Some(Blob::plain(&value)),
        expected: None,
        batch: Vec::new(),
        fingerprint: 0,
        type_name: "",
        wait_us: 0,
    }))?;
    match access_response(&out)? {
        ArchivedResponse::Error(e) => Err(remote_error(e)),
        _ => Ok(()),
    }
}

fn make_user_objects<U: UserTypes>(server: &mut Server, names: &[UserName]) -> Result<()> {
    for (name, id, type_name) in U::install(server, names)? {
        register_name(
            server,
            &name,
            (id, fingerprint_str(type_name), type_name.into()),
        )?;
    }
    Ok(())
}

/// Makes the registry and the user objects `U` under `names` in a local
/// manager's server about to serve (see `ManagerBuilder::register_object`).
fn install_user_objects<U: UserTypes>(server: &mut Server, names: &[UserName]) -> Result<()> {
    make_named(server, &[])?;
    make_user_objects::<U>(server, names)
}

/// Hands the queues named in the Python options to the server's Python listener.
fn serve_python_queues(
    server: &mut Server,
    options: &ServeOptions,
    ids: &[(String, ObjectId)],
) -> Result<()> {
    let Some(python) = &options.python else {
        return Ok(());
    };
    for q in &python.queues {
        let id = ids
            .iter()
            .find(|(name, _)| *name == q.name)
            .map(|(_, id)| *id)
            .ok_or_else(|| Error::InvalidState(format!("queue {:?} was not made", q.name)))?;
        server.serve_to_python(&q.name, id)?;
    }
    Ok(())
}

/// Creates the registry and the named objects in a server about to serve;
/// returns each name's object.
fn make_named(server: &mut Server, named: &[Named]) -> Result<Vec<(String, ObjectId)>> {
    let tag = registry_tag();
    let registry = expect_created(
        server,
        &Request::Create {
            kind: ObjectKind::Dict,
            fingerprint: tag.fingerprint,
            type_name: &tag.name,
            arg: 0,
        },
    )?;
    if registry != REGISTRY {
        return Err(Error::InvalidState(
            "the registry must be the server's first object".into(),
        ));
    }
    let mut ids = Vec::with_capacity(named.len());
    for n in named {
        let id = expect_created(
            server,
            &Request::Create {
                kind: n.kind,
                fingerprint: n.fingerprint,
                type_name: &n.type_name,
                arg: n.arg,
            },
        )?;
        register_name(server, &n.name, (id, n.fingerprint, n.type_name.clone()))?;
        ids.push((n.name.clone(), id));
    }
    Ok(ids)
}
