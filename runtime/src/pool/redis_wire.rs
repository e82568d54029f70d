//! What the distributed Pool and its Redis workers share: key names, the
//! fields of a task entry, the report a worker pushes back, the scripts,
//! and the identity of a build.
//!
//! Keys of the pool named `name` (under the target's prefix `p`):
//!
//! | key | type | what |
//! |---|---|---|
//! | `p:pool:name:tasks` | stream, group `workers` | chunks waiting or running |
//! | `p:pool:name:workers` | hash | live workers' heartbeats |
//! | `p:pool:name:pools` | hash | the pools using the stream, by id (leased) |
//! | `p:pool:name:alive:<id>` | string (leased) | pool `<id>` still wants results |
//! | `p:pool:name:results:<id>` | list | reports for pool `<id>` |
//!
//! The pools create the stream; workers never create a key that no pool
//! holds (their scripts check first), so the last pool to go removes
//! everything and nothing comes back while workers wait for the next one.

use std::sync::OnceLock;
use std::time::Duration;

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pool::wire::ChunkOutcome;
use crate::redis::RedisTarget;

/// The consumer group every worker of a pool reads in.
pub(crate) const GROUP: &str = "workers";
/// How long a pool's `alive` key and `pools` entry last unless renewed
/// (the pool renews them while it runs; a pool process that died without
/// cleaning up leaves its keys for this long).
pub(crate) const POOL_LEASE: Duration = Duration::from_secs(60);
/// How often a worker renews its heartbeat and the claim on the task it runs.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a worker's heartbeat lasts: `pool.workers()` lists it until then.
pub(crate) const WORKER_LEASE: Duration = Duration::from_secs(5);

/// The environment variable that makes [`init`](crate::init) run a worker.
pub const WORKER_ENV: &str = "MULTIPROC_WORKER";
/// Replaces a worker's build identity: only for tests of the mismatch path.
pub(crate) const FAKE_BUILD_ENV: &str = "MULTIPROC_WORKER_FAKE_BUILD";

/// The keys of one pool name.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub tasks: String,
    pub workers: String,
    pub pools: String,
    base: String,
}

impl Keys {
    pub fn new(target: &RedisTarget, name: &str) -> Result<Keys> {
        check_name(name)?;
        let base = target.key("pool", name);
        Ok(Keys {
            tasks: format!("{base}:tasks"),
            workers: format!("{base}:workers"),
            pools: format!("{base}:pools"),
            base,
        })
    }

    pub fn alive(&self, pool: &str) -> String {
        format!("{}:alive:{pool}", self.base)
    }

    pub fn results(&self, pool: &str) -> String {
        format!("{}:results:{pool}", self.base)
    }
}

/// A pool name: non-empty, without `/`, `:` or whitespace.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains([':', '/']) || name.contains(char::is_whitespace) {
        return Err(Error::InvalidArgument(format!(
            "pool name {name:?}: must be non-empty, without ':', '/' or whitespace"
        )));
    }
    Ok(())
}

/// The body of a task entry (field `t`): which function, and its items.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) struct TaskBody {
    pub entry_offset: i64,
    pub target_offset: i64,
    pub count: u64,
    /// `A::encode_many` of the chunk's items.
    pub args: Vec<u8>,
}

/// What a worker pushes on a pool's results list.
#[derive(Archive, Serialize, Deserialize, Debug)]
#[rkyv(crate = rkyv)]
pub(crate) enum WorkerReport {
    /// The chunk ran: its items' outcomes.
    Done {
        job: u64,
        first: u64,
        attempt: u32,
        busy_ns: u64,
        outcome: ChunkOutcome,
    },
    /// The worker could not read the task entry.
    Unreadable {
        job: u64,
        first: u64,
        attempt: u32,
        message: String,
    },
    /// The worker runs another build and did not run the chunk.
    Refused {
        job: u64,
        first: u64,
        attempt: u32,
        message: String,
    },
}

pub(crate) fn encode_body(body: &TaskBody) -> Result<Vec<u8>> {
    Ok(rkyv::to_bytes::<rkyv::rancor::Error>(body)
        .map_err(Error::codec)?
        .into_vec())
}

pub(crate) fn encode_report(report: &WorkerReport) -> Result<Vec<u8>> {
    Ok(rkyv::to_bytes::<rkyv::rancor::Error>(report)
        .map_err(Error::codec)?
        .into_vec())
}

/// Decodes bytes read from Redis (checked: anyone with access to the
/// server could have written them).
pub(crate) fn decode_body(bytes: &[u8]) -> Result<TaskBody> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<TaskBody, rkyv::rancor::Error>(&aligned).map_err(Error::codec)
}

/// As [`decode_body`], for a report.
pub(crate) fn decode_report(bytes: &[u8]) -> Result<WorkerReport> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<WorkerReport, rkyv::rancor::Error>(&aligned).map_err(Error::codec)
}

/// This binary's build: the linker's build id (a digest of the linked
/// file, in its `NT_GNU_BUILD_ID` note) or, without one, a digest of its
/// contents (slower: the whole file is read), and the layout check of its
/// functions. Equal in two processes iff they run the same build,
/// wherever the file lies (a copy on another host has another inode, not
/// another build). Computed once.
pub(crate) fn build_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let layout = crate::process::launch::anchor_check();
        if let Some(id) = elf_build_id("/proc/self/exe") {
            return format!("gnu-{id}/{layout:x}");
        }
        match digest_file("/proc/self/exe") {
            Ok(digest) => format!("sha256-{digest}/{layout:x}"),
            // Unreadable: fall back to the file's identity, which at worst
            // makes workers on other hosts refuse (never run the wrong code).
            Err(e) => format!("{} ({e})/{layout:x}", crate::process::launch::identity()),
        }
    })
}

/// The build a worker announces: its own, unless a test replaces it.
pub(crate) fn worker_build_id() -> String {
    match std::env::var(FAKE_BUILD_ENV) {
        Ok(fake) if !fake.is_empty() => fake,
        _ => build_id().to_owned(),
    }
}

/// The `NT_GNU_BUILD_ID` note of an ELF64 little-endian file, in hex:
/// found through the program headers (`PT_NOTE`), which lie at the start.
/// `None` if the file has none or is not such a file.
fn elf_build_id(path: &str) -> Option<String> {
    use std::os::unix::fs::FileExt;
    const PT_NOTE: u32 = 4;
    const NT_GNU_BUILD_ID: u32 = 3;
    let file = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 64];
    file.read_exact_at(&mut head, 0).ok()?;
    // ELF magic, 64-bit, little-endian.
    if head[..4] != *b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at =
        |b: &[u8], at: usize| Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let u32_at =
        |b: &[u8], at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let u64_at =
        |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
    let phoff = u64_at(&head, 32)?;
    let phentsize = u16_at(&head, 54)? as u64;
    let phnum = u16_at(&head, 56)? as u64;
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    file.read_exact_at(&mut table, phoff).ok()?;
    for i in 0..phnum as usize {
        let ph = &table[i * phentsize as usize..][..phentsize as usize];
        if u32_at(ph, 0)? != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(ph, 8)?, u64_at(ph, 32)?);
        if size > 1 << 16 {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        file.read_exact_at(&mut notes, offset).ok()?;
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let namesz = u32_at(&notes, at)? as usize;
            let descsz = u32_at(&notes, at + 4)? as usize;
            let kind = u32_at(&notes, at + 8)?;
            let name_at = at + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let next = desc_at.checked_add(descsz.div_ceil(4) * 4)?;
            let name = notes.get(name_at..name_at + namesz)?;
            let desc = notes.get(desc_at..desc_at + descsz)?;
            if kind == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() {
                return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
            }
            at = next;
        }
    }
    None
}

/// The first 16 bytes of the SHA-256 of a file, in hex.
fn digest_file(path: &str) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hasher.finalize();
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

/// The host this process runs on, for the workers list.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The milliseconds in `d`, for Redis arguments.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A worker's heartbeat: written only while some pool holds the stream.
/// KEYS: tasks, workers. ARGV: consumer, "host\tpid\tdone", lease ms,
/// the entries it holds, separated by spaces (or "").
pub(crate) const HEARTBEAT_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '\t' .. (now + tonumber(ARGV[3])))
if ARGV[4] ~= '' then
  local args = {KEYS[1], 'workers', ARGV[1], 0}
  for id in string.gmatch(ARGV[4], '%S+') do args[#args + 1] = id end
  args[#args + 1] = 'JUSTID'
  pcall(redis.call, 'XCLAIM', unpack(args))
end
return 1
"#;

/// A worker's reports of entries of one pool: pushed only if the pool
/// still wants them, and the entries acknowledged and deleted in the same
/// step (so a worker killed at any point either reported and released an
/// entry, or did neither). KEYS: tasks, results, alive. ARGV: results
/// lease ms, the number of entries, their ids, then the reports (one per
/// chunk the entries held).
pub(crate) const REPORT_SCRIPT: &str = r#"
local n = tonumber(ARGV[2])
local ids, reports = {}, {}
for i = 3, 2 + n do ids[#ids + 1] = ARGV[i] end
for i = 3 + n, #ARGV do reports[#reports + 1] = ARGV[i] end
if #ids == 0 then return 0 end
if #reports > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RPUSH', KEYS[2], unpack(reports))
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
pcall(redis.call, 'XACK', KEYS[1], 'workers', unpack(ids))
pcall(redis.call, 'XDEL', KEYS[1], unpack(ids))
return 1
"#;

/// A pool starts or renews its lease. KEYS: tasks, pools, alive. ARGV:
/// pool id, lease ms.
pub(crate) const POOL_BEAT_SCRIPT: &str = r#"
local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], 'workers', '0', 'MKSTREAM')
if not ok and not string.find(tostring(err), 'BUSYGROUP') then return redis.error_reply(tostring(err)) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], now + tonumber(ARGV[2]))
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return 1
"#;

/// A pool goes: its keys, its entries, and (if it was the last pool of
/// the name) the stream and the heartbeats. KEYS: tasks, workers, pools,
/// alive, results. ARGV: pool id, its consumer name, its entries' ids…
pub(crate) const POOL_END_SCRIPT: &str = r#"
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('HDEL', KEYS[3], ARGV[1])
for i = 3, #ARGV do
  pcall(redis.call, 'XACK', KEYS[1], 'workers', ARGV[i])
  pcall(redis.call, 'XDEL', KEYS[1], ARGV[i])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < now then redis.call('HDEL', KEYS[3], all[i]) end
end
if redis.call('HLEN', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
else
  pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[1], 'workers', ARGV[2])
end
return 1
"#;

/// The live workers' heartbeats, pruning the expired. KEYS: workers.
pub(crate) const WORKERS_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local expiry = tonumber(string.match(all[i + 1], '\t(%d+)$'))
  if expiry == nil or expiry < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(live, all[i + 1])
  end
end
return live
"#;

/// A worker that stops removes its heartbeat and its consumer. KEYS:
/// tasks, workers. ARGV: consumer.
pub(crate) const WORKER_END_SCRIPT: &str = r#"
redis.call('HDEL', KEYS[2], ARGV[1])
pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[1], 'workers', ARGV[1])
return 1
"#;

/// The consumer name of a worker: `host/pid/random`.
pub(crate) fn consumer_name(host: &str, pid: i32) -> String {
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    format!("{host}/{pid}/{:08x}", u32::from_le_bytes(r))
}

/// The pid in a worker's consumer name (0 if it has none).
pub(crate) fn pid_of_consumer(consumer: &str) -> i32 {
    consumer
        .split('/')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_keys_apart() {
        for bad in ["", "a:b", "a/b", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let t = RedisTarget::new("redis://127.0.0.1:1/0").unwrap();
        let k = Keys::new(&t, "jobs").unwrap();
        assert_eq!(k.tasks, "multiproc:pool:jobs:tasks");
        assert_eq!(k.results("7"), "multiproc:pool:jobs:results:7");
    }

    #[test]
    fn this_build_has_an_id() {
        let id = build_id();
        assert!(id.starts_with("gnu-") || id.starts_with("sha256-"), "{id}");
        assert_eq!(elf_build_id("/nonexistent"), None);
        assert_eq!(elf_build_id("/proc/self/status"), None);
    }

    #[test]
    fn a_consumer_name_carries_the_pid() {
        assert_eq!(pid_of_consumer(&consumer_name("h", 4242)), 4242);
        assert_eq!(pid_of_consumer("pool-1"), 0);
    }

    #[test]
    fn reports_round_trip() {
        let r = WorkerReport::Refused {
            job: 3,
            first: 4,
            attempt: 1,
            message: "m".into(),
        };
        match decode_report(&encode_report(&r).unwrap()).unwrap() {
            WorkerReport::Refused {
                job: 3, first: 4, ..
            } => {}
            other => panic!("{other:?}"),
        }
        assert!(decode_report(b"garbage").is_err());
    }
}
