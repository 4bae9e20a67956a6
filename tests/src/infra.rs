//! Private PostgreSQL, RabbitMQ and Redis servers: started in a directory
//! of their own on free ports, so that restarting or stopping them never
//! touches the machine's shared instances on the standard ports. The fault
//! suite runs on them; the TLS tests start them with a certificate
//! ([`ServerTls`]), listening for TLS only. Each stops when dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A server's certificate (naming `localhost` and `127.0.0.1`), its key and
/// the CA that client certificates are checked against. A server started
/// with one listens for TLS only.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// PEM certificate of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server.
    pub key_file: PathBuf,
    /// PEM CA certificate the clients' certificates must chain to.
    pub ca_file: PathBuf,
    /// Whether a client without a certificate is refused (Redis
    /// `--tls-auth-clients`, RabbitMQ `fail_if_no_peer_cert`). A
    /// certificate that is presented is always checked.
    pub require_client_cert: bool,
}

/// Copies `tls`'s files into `dir` (`server.crt`, `server.key`, `ca.crt`,
/// the key readable by its owner only), for a server that must own them.
fn install_tls(tls: &ServerTls, dir: &Path) -> anyhow::Result<ServerTls> {
    use std::os::unix::fs::PermissionsExt as _;
    let copy = |from: &Path, name: &str| -> anyhow::Result<PathBuf> {
        let to = dir.join(name);
        fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
        Ok(to)
    };
    let installed = ServerTls {
        cert_file: copy(&tls.cert_file, "server.crt")?,
        key_file: copy(&tls.key_file, "server.key")?,
        ca_file: copy(&tls.ca_file, "ca.crt")?,
        require_client_cert: tls.require_client_cert,
    };
    fs::set_permissions(&installed.key_file, fs::Permissions::from_mode(0o600))?;
    Ok(installed)
}

/// Whether the PostgreSQL server binaries are installed.
pub fn postgres_installed() -> bool {
    postgres_bin().is_ok()
}

/// Whether `rabbitmq-server` is installed.
pub fn rabbitmq_installed() -> bool {
    rabbit_scripts().is_ok()
}

/// Whether `redis-server` is installed.
pub fn redis_installed() -> bool {
    on_path("redis-server").is_some()
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join(program).exists())
}

/// A TCP port nobody listens on right now (the kernel's choice).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether this process runs as root (PostgreSQL then runs as `postgres`).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Run `command` to its end on a blocking thread; its standard output, or
/// an error naming `what` with everything it printed.
pub async fn run(mut command: Command, what: &str) -> anyhow::Result<String> {
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = command
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("{what}: cannot run {command:?}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "{what}: {} ({command:?})\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    })
    .await?
}

/// Append-only log file for a child process's output.
pub fn log_file(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok((file.try_clone()?.into(), file.into()))
}

/// Wait until something accepts TCP connections on `port`.
async fn until_listening(port: u16, what: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what} does not listen on port {port} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------- PostgreSQL

/// A PostgreSQL cluster of its own (`initdb` in the run's directory).
pub struct Postgres {
    bin: PathBuf,
    /// Listening for TLS only (`hostssl` lines alone in pg_hba.conf).
    tls: bool,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
    /// The user the server runs as when we are root (it refuses root).
    user: Option<&'static str>,
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or the directory of
/// `pg_ctl` on the PATH.
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("pg_ctl").exists() && dir.join("initdb").exists())
        .context("no PostgreSQL server binaries (initdb, pg_ctl) found")
}

/// The user a client certificate authenticates as on a [`Postgres`]
/// started with TLS (its certificate's common name must be this).
pub const POSTGRES_CERT_USER: &str = "telenet_cert";

impl Postgres {
    /// A new cluster under `root`, started.
    pub async fn start(root: &Path) -> anyhow::Result<Self> {
        Self::start_with(root, None).await
    }

    /// A new cluster under `root` that accepts TLS connections only
    /// (`ssl = on`, `hostssl` lines alone): `postgres` without a password,
    /// and [`POSTGRES_CERT_USER`] with a client certificate from the CA.
    pub async fn start_tls(root: &Path, tls: &ServerTls) -> anyhow::Result<Self> {
        Self::start_with(root, Some(tls)).await
    }

    async fn start_with(root: &Path, tls: Option<&ServerTls>) -> anyhow::Result<Self> {
        let dir = root.join("postgres");
        fs::create_dir_all(&dir)?;
        let tls = tls.map(|tls| install_tls(tls, &dir)).transpose()?;
        let user = is_root().then_some("postgres");
        if let Some(user) = user {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg(format!("{user}:")).arg(&dir);
            run(chown, "chown of the PostgreSQL directory").await?;
        }
        let pg = Self {
            bin: postgres_bin()?,
            tls: tls.is_some(),
            data: dir.join("data"),
            log: dir.join("postgres.log"),
            port: free_port()?,
            user,
        };
        let mut initdb = pg.command("initdb");
        initdb.arg("-D").arg(&pg.data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        run(initdb, "initdb").await?;
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off",
            pg.port,
            pg.data.display()
        );
        if let Some(tls) = &tls {
            // Over TCP, TLS only: no `host` line, so a plaintext client
            // finds no entry ("no encryption").
            fs::write(
                pg.data.join("pg_hba.conf"),
                format!(
                    "local all all trust\n\
                     hostssl all postgres 127.0.0.1/32 trust\n\
                     hostssl all {POSTGRES_CERT_USER} 127.0.0.1/32 cert\n"
                ),
            )?;
            if let Some(user) = user {
                let mut chown = Command::new("chown");
                chown
                    .arg(format!("{user}:"))
                    .arg(pg.data.join("pg_hba.conf"));
                run(chown, "chown of pg_hba.conf").await?;
            }
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c ssl_ca_file={}",
                tls.cert_file.display(),
                tls.key_file.display(),
                tls.ca_file.display()
            ));
        }
        let mut start = pg.command("pg_ctl");
        start
            .arg("-D")
            .arg(&pg.data)
            .arg("-l")
            .arg(&pg.log)
            .args(["-w", "-t", "60", "-o"])
            .arg(options)
            .arg("start");
        run(start, "pg_ctl start").await?;
        if tls.is_some() {
            let mut create = pg.command("psql");
            create
                .args(["-h"])
                .arg(&pg.data)
                .args([
                    "-p",
                    &pg.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-c"])
                .arg(format!("CREATE ROLE {POSTGRES_CERT_USER} LOGIN SUPERUSER"));
            run(create, "creating the certificate user").await?;
        }
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// The URL every service's schema lives under (with `sslmode=verify-full`
    /// on a server started with TLS).
    pub fn url(&self) -> String {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        if self.tls {
            format!("{url}?sslmode=verify-full")
        } else {
            url
        }
    }

    /// `pg_ctl restart -m fast`: every session is ended (SQLSTATE 57P01),
    /// the server stops and starts again on the same port.
    pub async fn restart_fast(&self) -> anyhow::Result<()> {
        let mut restart = self.command("pg_ctl");
        restart
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-m", "fast", "-w", "-t", "60", "restart"]);
        run(restart, "pg_ctl restart").await?;
        Ok(())
    }

    /// [`Postgres::restart_fast`] while another session holds `tables`
    /// locked, so that the services' statements on them are waiting, in
    /// flight, when the server goes down: what a busy database does, every
    /// time rather than by chance.
    pub async fn restart_fast_busy(&self, tables: &[&str], hold: Duration) -> anyhow::Result<()> {
        use telenet_store::sqlx::{self, Connection as _};
        let mut conn = sqlx::postgres::PgConnection::connect(&self.url())
            .await
            .context("connecting to lock tables")?;
        let mut tx = conn.begin().await?;
        sqlx::query(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            tables.join(", ")
        ))
        .execute(&mut *tx)
        .await
        .context("locking tables")?;
        tokio::time::sleep(hold).await;
        let restarted = self.restart_fast().await;
        drop(tx);
        drop(conn);
        restarted
    }

    /// Stop at once (end of the run).
    pub fn stop_now(&self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

// --------------------------------------------------------------- RabbitMQ

/// A RabbitMQ node of its own (its own node name, ports, Mnesia and logs).
pub struct Rabbit {
    server: PathBuf,
    ctl: PathBuf,
    dir: PathBuf,
    node: String,
    pub port: u16,
    dist_port: u16,
    tls: bool,
    child: Mutex<Option<Child>>,
}

/// Nodes started by this process so far (each needs a name of its own).
static NODES: AtomicU32 = AtomicU32::new(0);

/// The RabbitMQ scripts themselves, not the distribution's wrappers in
/// /usr/sbin (which switch to the `rabbitmq` user and its directories).
fn rabbit_scripts() -> anyhow::Result<(PathBuf, PathBuf)> {
    let own = Path::new("/usr/lib/rabbitmq/bin");
    if own.join("rabbitmq-server").exists() {
        return Ok((own.join("rabbitmq-server"), own.join("rabbitmqctl")));
    }
    let dir = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("rabbitmq-server").exists())
        .context("no rabbitmq-server found")?;
    Ok((dir.join("rabbitmq-server"), dir.join("rabbitmqctl")))
}

impl Rabbit {
    /// A new node under `root`, started.
    pub async fn start(root: &Path) -> anyhow::Result<Self> {
        Self::start_with(root, None).await
    }

    /// A new node under `root` with a TLS listener and no plaintext one.
    pub async fn start_tls(root: &Path, tls: &ServerTls) -> anyhow::Result<Self> {
        Self::start_with(root, Some(tls)).await
    }

    async fn start_with(root: &Path, tls: Option<&ServerTls>) -> anyhow::Result<Self> {
        let dir = root.join("rabbitmq");
        fs::create_dir_all(&dir)?;
        let (server, ctl) = rabbit_scripts()?;
        let port = free_port()?;
        let mut dist_port = free_port()?;
        while dist_port == port {
            dist_port = free_port()?;
        }
        fs::write(dir.join("rabbitmq-env.conf"), "")?;
        fs::write(dir.join("enabled_plugins"), "[].\n")?;
        let listeners = match tls {
            None => format!("listeners.tcp.1 = 127.0.0.1:{port}\n"),
            Some(tls) => format!(
                "listeners.tcp = none\n\
                 listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = {}\n",
                tls.cert_file.display(),
                tls.key_file.display(),
                tls.ca_file.display(),
                tls.require_client_cert,
            ),
        };
        fs::write(dir.join("rabbitmq.conf"), listeners)?;
        let rabbit = Self {
            server,
            ctl,
            node: format!(
                "telenet-{}-{}@localhost",
                std::process::id(),
                NODES.fetch_add(1, Ordering::Relaxed)
            ),
            dir,
            port,
            dist_port,
            tls: tls.is_some(),
            child: Mutex::new(None),
        };
        rabbit.start_node().await?;
        Ok(rabbit)
    }

    /// `amqp://…`, or `amqps://…` for a node started with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        format!("{scheme}://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("rabbitmq.pid")
    }

    /// The environment that makes the node (and `rabbitmqctl`) this one.
    fn env(&self, command: &mut Command) {
        let d = |name: &str| self.dir.join(name);
        command
            .env("HOME", &self.dir)
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", self.pid_file())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            );
    }

    fn ctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.ctl);
        self.env(&mut c);
        c.arg("-n").arg(&self.node).args(args);
        c
    }

    async fn start_node(&self) -> anyhow::Result<()> {
        let (out, err) = log_file(&self.dir.join("server.out"))?;
        let mut server = Command::new(&self.server);
        self.env(&mut server);
        let child = server
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting rabbitmq-server")?;
        *lock(&self.child) = Some(child);
        let pid_file = self.pid_file().display().to_string();
        run(
            self.ctl(&["wait", &pid_file, "--timeout", "90"]),
            "rabbitmqctl wait",
        )
        .await?;
        until_listening(self.port, "RabbitMQ", Duration::from_secs(30)).await
    }

    async fn stop_node(&self) -> anyhow::Result<()> {
        let pid_file = self.pid_file().display().to_string();
        run(self.ctl(&["stop", &pid_file]), "rabbitmqctl stop").await?;
        self.reap();
        Ok(())
    }

    fn reap(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop the node (`rabbitmqctl stop`: every connection closed) and
    /// start it again; durable queues and persistent messages survive.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.stop_node().await?;
        self.start_node().await
    }

    /// How many messages wait in each queue whose name ends with `.dlq`
    /// (the dead letters), by queue; empty ones left out.
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let out = run(
            self.ctl(&[
                "list_queues",
                "name",
                "messages",
                "--no-table-headers",
                "-q",
            ]),
            "rabbitmqctl list_queues",
        )
        .await?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let name = words.next()?;
                let n = words.next()?.parse::<u64>().ok()?;
                (name.ends_with(".dlq") && n > 0).then(|| (name.to_owned(), n))
            })
            .collect())
    }

    /// Stop at once (end of the run).
    pub fn stop_now(&self) {
        let pid_file = self.pid_file().display().to_string();
        let _ = self
            .ctl(&["stop", &pid_file])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.reap();
    }
}

// ------------------------------------------------------------------ Redis

/// A Redis server of its own (no persistence).
pub struct Redis {
    dir: PathBuf,
    pub port: u16,
    tls: Option<ServerTls>,
    child: Mutex<Option<Child>>,
}

impl Redis {
    pub async fn start(root: &Path) -> anyhow::Result<Self> {
        Self::start_with(root, None).await
    }

    /// A server under `root` listening for TLS only (`--port 0`).
    pub async fn start_tls(root: &Path, tls: &ServerTls) -> anyhow::Result<Self> {
        Self::start_with(root, Some(tls)).await
    }

    async fn start_with(root: &Path, tls: Option<&ServerTls>) -> anyhow::Result<Self> {
        let dir = root.join("redis");
        fs::create_dir_all(&dir)?;
        let redis = Self {
            dir,
            port: free_port()?,
            tls: tls.cloned(),
            child: Mutex::new(None),
        };
        redis.start_server().await?;
        Ok(redis)
    }

    /// `redis://…`, or `rediss://…` for a server started with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub async fn start_server(&self) -> anyhow::Result<()> {
        let (out, err) = log_file(&self.dir.join("redis.log"))?;
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => {
                command.arg("--port").arg(self.port.to_string());
            }
            Some(tls) => {
                command
                    .args(["--port", "0", "--tls-port"])
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&tls.cert_file)
                    .arg("--tls-key-file")
                    .arg(&tls.key_file)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca_file)
                    .arg("--tls-auth-clients")
                    .arg(if tls.require_client_cert { "yes" } else { "no" });
            }
        }
        let child = command
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting redis-server")?;
        *lock(&self.child) = Some(child);
        until_listening(self.port, "Redis", Duration::from_secs(20)).await
    }

    /// Kill the server; presence is gone until [`Redis::start_server`].
    pub fn stop(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_now();
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.stop_now();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
