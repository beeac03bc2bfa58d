//! The userspace backend: a wireguard-go process per device, spoken to over
//! its UAPI socket, started detached so it outlives the daemon, and adopted
//! again by the next daemon.

use std::fs::{self, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::uapi::{self, Client};
use super::{DeviceState, WireGuardError};

/// Where wireguard-go puts UAPI sockets (compiled into it).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/wireguard";
/// Where the daemon sends the output of the wireguard-go it starts.
pub const DEFAULT_LOG_DIR: &str = "/run/vpblu";

/// Which wireguard-go to run, or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireGuardGo {
    /// The build of `tools/wireguard-go/build.sh`
    /// (`$VPBLU_WIREGUARD_GO_DIR` or `~/.cache/vpblu/wireguard-go`, then
    /// `current/wireguard-go`), else `wireguard-go` on `PATH`.
    Auto,
    /// This binary.
    Path(PathBuf),
    /// Never start one: another container (the sidecar) runs
    /// `wireguard-go -f NAME`; the daemon waits for its socket and adopts it.
    External,
}

/// How the userspace backend finds, starts and talks to wireguard-go.
#[derive(Clone, Debug)]
pub struct UserspaceOptions {
    /// Which binary to start when no device answers.
    pub program: WireGuardGo,
    /// The UAPI socket directory; `/var/run/wireguard` unless wireguard-go
    /// was built with another.
    pub socket_dir: PathBuf,
    /// Where `wireguard-go-NAME.log` goes (appended to, across restarts).
    pub log_dir: PathBuf,
    /// How long a new (or external) wireguard-go may take to answer.
    pub start_timeout: Duration,
    /// Bound on every UAPI read and write.
    pub request_timeout: Duration,
}

impl Default for UserspaceOptions {
    fn default() -> Self {
        UserspaceOptions {
            program: WireGuardGo::Auto,
            socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            start_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// The wireguard-go that [`WireGuardGo::Auto`] would start, if any.
pub fn find_wireguard_go() -> Result<PathBuf, WireGuardError> {
    let mut tried = Vec::new();
    let cache = std::env::var_os("VPBLU_WIREGUARD_GO_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/vpblu/wireguard-go")));
    if let Some(cache) = cache {
        let candidate = cache.join("current/wireguard-go");
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join("wireguard-go");
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    tried.push("wireguard-go on PATH".to_owned());
    Err(WireGuardError::NoWireGuardGo { tried: tried.join(", ") })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// How this handle came to the process.
#[derive(Debug)]
enum Origin {
    /// We started it; the `Child` reaps it if it dies while we live.
    Started(Child),
    /// It was already running (a previous daemon, or a sidecar).
    Adopted,
}

/// One userspace device.
#[derive(Debug)]
pub(crate) struct UserspaceDevice {
    name: String,
    client: Client,
    log: PathBuf,
    pid: u32,
    origin: Origin,
}

/// What answers on a socket path.
enum Probe {
    /// A wireguard-go in our network namespace, with this pid.
    Answered(u32),
    /// No socket, or a stale one nobody listens on.
    Absent,
}

impl UserspaceDevice {
    /// Adopts the device if its socket answers in this network namespace;
    /// otherwise starts wireguard-go (or, for [`WireGuardGo::External`],
    /// waits for it).
    pub fn open(name: &str, options: &UserspaceOptions) -> Result<Self, WireGuardError> {
        let device = Self::adopt(name, options)?;
        if let Some(device) = device {
            return Ok(device);
        }
        match &options.program {
            WireGuardGo::External => Self::wait_external(name, options),
            WireGuardGo::Path(path) => Self::start(name, path, options),
            WireGuardGo::Auto => Self::start(name, &find_wireguard_go()?, options),
        }
    }

    /// The device if a wireguard-go in this network namespace answers on its
    /// socket; `None` if nothing does.
    pub fn adopt(name: &str, options: &UserspaceOptions) -> Result<Option<Self>, WireGuardError> {
        let client = client(name, options);
        match probe(name, &client)? {
            Probe::Answered(pid) => Ok(Some(UserspaceDevice {
                name: name.to_owned(),
                log: log_path(name, options),
                client,
                pid,
                origin: Origin::Adopted,
            })),
            Probe::Absent => Ok(None),
        }
    }

    fn wait_external(name: &str, options: &UserspaceOptions) -> Result<Self, WireGuardError> {
        let deadline = Instant::now() + options.start_timeout;
        loop {
            if let Some(device) = Self::adopt(name, options)? {
                return Ok(device);
            }
            if Instant::now() >= deadline {
                return Err(WireGuardError::NotReady {
                    name: name.to_owned(),
                    socket: client(name, options).socket,
                    waited: options.start_timeout,
                    what: format!(
                        "nothing serves it, and this daemon is set not to start wireguard-go itself \
                         (the sidecar should run `wireguard-go -f {name}`)"
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `program -f NAME` in its own process group (so signals meant
    /// for the daemon, e.g. SIGTERM or a terminal's SIGINT, do not reach
    /// it), in the calling thread's network namespace, with output appended
    /// to its log, and waits for its socket to answer.
    fn start(name: &str, program: &Path, options: &UserspaceOptions) -> Result<Self, WireGuardError> {
        let log = log_path(name, options);
        let log_err = |source| WireGuardError::Log { name: name.to_owned(), path: log.clone(), source };
        fs::DirBuilder::new().recursive(true).mode(0o750).create(&options.log_dir).map_err(log_err)?;
        let out = OpenOptions::new().create(true).append(true).mode(0o640).open(&log).map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        let log_start = out.metadata().map(|m| m.len()).unwrap_or(0);

        let mut child = Command::new(program)
            .arg("-f")
            .arg(name)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| WireGuardError::Spawn {
                name: name.to_owned(),
                program: program.to_path_buf(),
                source,
            })?;
        let pid = child.id();
        tracing::info!(
            device = name,
            pid,
            program = %program.display(),
            log = %log.display(),
            "started wireguard-go"
        );

        let client = client(name, options);
        match wait_ready(name, &mut child, &client, &log, log_start, options.start_timeout) {
            Ok(()) => Ok(UserspaceDevice {
                name: name.to_owned(),
                client,
                log,
                pid,
                origin: Origin::Started(child),
            }),
            Err(e) => {
                // Ours, and useless: do not leave it behind.
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// The wireguard-go process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether this handle started the process (rather than adopting it).
    pub fn started_here(&self) -> bool {
        matches!(self.origin, Origin::Started(_))
    }

    /// The UAPI socket.
    pub fn socket(&self) -> &Path {
        self.client.path()
    }

    /// An error if the process we started has exited (reaping it), or the
    /// socket no longer answers.
    pub fn check(&mut self) -> Result<(), WireGuardError> {
        self.exited()?;
        let answered = self.get().map(drop);
        if answered.is_err() {
            // A process being killed stops answering a moment before it can
            // be reaped: say what happened rather than what was seen.
            self.exited()?;
        }
        answered
    }

    /// `Exited` if the child we started is gone (it is reaped).
    fn exited(&mut self) -> Result<(), WireGuardError> {
        if let Origin::Started(child) = &mut self.origin
            && let Some(status) = child.try_wait().ok().flatten()
        {
            return Err(WireGuardError::Exited {
                name: self.name.clone(),
                pid: self.pid,
                status,
                socket: self.client.socket.clone(),
                tail: log_tail(&self.log, 0),
                log: self.log.clone(),
            });
        }
        Ok(())
    }

    /// `get=1`, parsed.
    pub fn get(&self) -> Result<DeviceState, WireGuardError> {
        let reply = self.client.get().map_err(|source| self.uapi_err("get", source))?;
        uapi::parse_get(&reply).map_err(|detail| self.protocol_err("get", detail))
    }

    /// One `set=1` transaction.
    pub fn set(&self, request: &uapi::SetRequest<'_>) -> Result<(), WireGuardError> {
        let body = uapi::encode_set(request);
        let reply = self.client.request(&body).map_err(|source| self.uapi_err("set", source))?;
        match uapi::parse_errno(&reply).map_err(|detail| self.protocol_err("set", detail))? {
            0 => Ok(()),
            errno => Err(WireGuardError::UapiRefused {
                name: self.name.clone(),
                socket: self.client.socket.clone(),
                op: "set",
                errno,
            }),
        }
    }

    fn uapi_err(&self, op: &'static str, source: io::Error) -> WireGuardError {
        WireGuardError::Uapi { name: self.name.clone(), socket: self.client.socket.clone(), op, source }
    }

    fn protocol_err(&self, op: &'static str, detail: uapi::ReplyError) -> WireGuardError {
        WireGuardError::UapiProtocol {
            name: self.name.clone(),
            socket: self.client.socket.clone(),
            op,
            detail,
        }
    }
}

/// Waits until the socket answers for `child`, or it exits, or time runs out.
fn wait_ready(
    name: &str,
    child: &mut Child,
    client: &Client,
    log: &Path,
    log_start: u64,
    timeout: Duration,
) -> Result<(), WireGuardError> {
    let pid = child.id();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            return Err(WireGuardError::Exited {
                name: name.to_owned(),
                pid,
                status,
                socket: client.socket.clone(),
                tail: log_tail(log, log_start),
                log: log.to_path_buf(),
            });
        }
        // A socket answering for another pid is a concurrent starter's:
        // ours fails with "socket in use" and is reported above.
        if let Probe::Answered(answered) = probe(name, client)?
            && answered == pid
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(WireGuardError::NotReady {
                name: name.to_owned(),
                socket: client.socket.clone(),
                waited: timeout,
                what: format!(
                    "wireguard-go pid {pid} was started but its socket never answered (it is being \
                     killed); last lines of {}:\n{}",
                    log.display(),
                    log_tail(log, log_start)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn client(name: &str, options: &UserspaceOptions) -> Client {
    Client { socket: options.socket_dir.join(format!("{name}.sock")), timeout: options.request_timeout }
}

fn log_path(name: &str, options: &UserspaceOptions) -> PathBuf {
    options.log_dir.join(format!("wireguard-go-{name}.log"))
}

/// Stops the wireguard-go that serves device `name` (removing vpblu from
/// a node): SIGTERM, then SIGKILL if its socket still answers after
/// `within`; then removes a socket file left behind. wireguard-go deletes
/// its TUN device as it exits. The pid it stopped; `None` when nothing
/// served the device.
pub fn stop(name: &str, options: &UserspaceOptions, within: Duration) -> Result<Option<u32>, WireGuardError> {
    let client = client(name, options);
    let Probe::Answered(pid) = probe(name, &client)? else {
        remove_stale_socket(name, &client)?;
        return Ok(None);
    };
    let signal = |signal: Signal| {
        let target = i32::try_from(pid).ok().and_then(Pid::from_raw);
        match target.map(|target| kill_process(target, signal)) {
            Some(Ok(())) | Some(Err(rustix::io::Errno::SRCH)) => Ok(()),
            Some(Err(e)) => Err(WireGuardError::Stop { name: name.to_owned(), pid, source: e.into() }),
            None => Ok(()),
        }
    };
    signal(Signal::TERM)?;
    let deadline = Instant::now() + within;
    while matches!(probe(name, &client), Ok(Probe::Answered(_))) {
        if Instant::now() >= deadline {
            tracing::warn!(device = name, pid, waited = ?within, "wireguard-go ignored SIGTERM; sending SIGKILL");
            signal(Signal::KILL)?;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    remove_stale_socket(name, &client)?;
    Ok(Some(pid))
}

/// Removes the socket file of `name` when nothing listens on it.
fn remove_stale_socket(name: &str, client: &Client) -> Result<(), WireGuardError> {
    match fs::remove_file(&client.socket) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(WireGuardError::Uapi {
            name: name.to_owned(),
            socket: client.socket.clone(),
            op: "remove",
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Who answers on the socket. A socket served from another network
/// namespace is an error: its device is not ours to configure.
fn probe(name: &str, client: &Client) -> Result<Probe, WireGuardError> {
    let uapi_err = |source| WireGuardError::Uapi {
        name: name.to_owned(),
        socket: client.socket.clone(),
        op: "get",
        source,
    };
    let mut stream = match client.connect() {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            return Ok(Probe::Absent);
        }
        Err(e) => return Err(uapi_err(e)),
    };
    // SO_PEERCRED on a connected unix socket: the pid that called listen(2).
    let pid = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(|e| uapi_err(e.into()))?
        .pid
        .as_raw_nonzero()
        .get()
        .unsigned_abs();
    if same_netns(pid) == Some(false) {
        return Err(WireGuardError::ForeignNamespace {
            name: name.to_owned(),
            socket: client.socket.clone(),
            pid,
        });
    }
    let reply = uapi::exchange(&mut stream, "get=1\n\n").map_err(uapi_err)?;
    match uapi::parse_errno(&reply) {
        Ok(0) => Ok(Probe::Answered(pid)),
        Ok(errno) => Err(WireGuardError::UapiRefused {
            name: name.to_owned(),
            socket: client.socket.clone(),
            op: "get",
            errno,
        }),
        Err(detail) => Err(WireGuardError::UapiProtocol {
            name: name.to_owned(),
            socket: client.socket.clone(),
            op: "get",
            detail,
        }),
    }
}

/// Whether `pid` is in the calling thread's network namespace; `None` when
/// that cannot be told (no /proc, or no permission to look).
fn same_netns(pid: u32) -> Option<bool> {
    let theirs = fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    let ours = fs::metadata("/proc/thread-self/ns/net").ok()?;
    Some(theirs.dev() == ours.dev() && theirs.ino() == ours.ino())
}

/// The last lines of `log` written after byte `from`.
fn log_tail(log: &Path, from: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = fs::File::open(log)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(from.max(len.saturating_sub(4096))))?;
        let mut text = String::new();
        file.take(4096).read_to_string(&mut text)?;
        Ok(text)
    };
    match read() {
        Ok(text) if text.trim().is_empty() => "(nothing)".to_owned(),
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        }
        Err(e) => format!("(could not read it: {e})"),
    }
}
