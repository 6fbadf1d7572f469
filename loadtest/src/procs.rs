//! The processes a load test runs and measures: mailbeacon, nginx, the bare hyper
//! server, redis-server (one node or a 3-master Cluster), each on a free 127.0.0.1
//! port with its own scratch directory; and what `/proc` says about them (CPU ticks,
//! resident memory) and about the machine (busy ticks, load average).
//!
//! Every process is started by us and stopped by its own PID (on drop too), never by
//! name. Every wait is bounded.

use std::fs;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub type Result<T> = std::result::Result<T, String>;

pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A child process we own: stopped by PID when dropped.
pub struct Proc {
    child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = log_file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Proc {
            child,
            name: name.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns an error if the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("{} exited ({status})", self.name)),
            _ => Ok(()),
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal to this process only.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of a child we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// SIGTERM, then SIGKILL after `limit`. Returns true if it exited by itself.
    pub fn stop(&mut self, limit: Duration) -> bool {
        self.signal(libc::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until `url` answers 200, the process being alive meanwhile.
pub fn wait_http(url: &str, proc: &mut Proc, limit: Duration) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    let t0 = Instant::now();
    loop {
        proc.check_alive()?;
        if let Ok(r) = agent.get(url).call() {
            if r.status() == 200 {
                return Ok(());
            }
        }
        if t0.elapsed() > limit {
            return Err(format!(
                "{} did not answer {url} within {limit:?}",
                proc.name
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn wait_tcp(port: u16, proc: &mut Proc, limit: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        proc.check_alive()?;
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if t0.elapsed() > limit {
            return Err(format!(
                "{} did not listen on {port} within {limit:?}",
                proc.name
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The mailbeacon server under test.
pub struct Mailbeacon {
    pub bin: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    pub admin: String,
    pub env: Vec<(String, String)>,
    pub proc: Option<Proc>,
    log: PathBuf,
}

impl Mailbeacon {
    pub fn start(bin: &Path, scratch: &Path, env: Vec<(String, String)>) -> Result<Mailbeacon> {
        let port = free_port()?;
        let data_dir = scratch.join(format!("mailbeacon-{port}"));
        fs::create_dir_all(&data_dir).map_err(|e| e.to_string())?;
        let mut m = Mailbeacon {
            bin: bin.to_path_buf(),
            log: scratch.join(format!("mailbeacon-{port}.log")),
            data_dir,
            port,
            admin: format!("loadtest-admin-{port}-0123456789abcdef"),
            env,
            proc: None,
        };
        m.spawn()?;
        Ok(m)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.env("MAILBEACON_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("MAILBEACON_DATA_DIR", &self.data_dir)
            .env("MAILBEACON_ADMIN_TOKEN", &self.admin)
            .env("RUST_LOG", "warn");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut p = Proc::spawn("mailbeacon", &mut cmd, &self.log)?;
        wait_http(
            &format!("{}/healthz", self.base()),
            &mut p,
            Duration::from_secs(60),
        )
        .map_err(|e| format!("{e}\n{}", self.log_tail()))?;
        self.proc = Some(p);
        Ok(())
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// SIGTERM (graceful: in-flight requests finish, the store flushes).
    pub fn stop(&mut self) -> bool {
        self.proc
            .take()
            .map(|mut p| p.stop(Duration::from_secs(30)))
            .unwrap_or(true)
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// nginx `empty_gif` with an access log to a file, one worker: the anchors' "A nginx
/// w1 log file", from a config this writes (Debian's nginx, not the system config).
/// `/c/…` answers a 302 (logged the same way) so clicks have a counterpart too.
pub struct Nginx {
    pub port: u16,
    pub proc: Proc,
}

impl Nginx {
    pub fn start(scratch: &Path) -> Result<Nginx> {
        Nginx::start_with(scratch, None)
    }

    /// With `lua_redis`: the anchors' "nginx + Lua + Redis" instead: access log off,
    /// and before answering, one `HINCRBY` per hit to Redis on that port over
    /// pooled connections (lua-resty-redis as Debian's `lua-nginx-redis` ships it).
    pub fn start_with(scratch: &Path, lua_redis: Option<u16>) -> Result<Nginx> {
        let port = free_port()?;
        let dir = scratch.join(format!("nginx-{port}"));
        fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
        let d = dir.display();
        let (modules, lua_http, access, lua_open, lua_click) = match lua_redis {
            None => (
                String::new(),
                String::new(),
                format!("access_log {d}/access.log combined;"),
                String::new(),
                String::new(),
            ),
            Some(rp) => {
                let block = |key: &str| {
                    format!(
                        r#"access_by_lua_block {{
        local redis = require "nginx.redis"
        local red = redis:new()
        red:set_timeout(1000)
        local ok, err = red:connect("127.0.0.1", {rp})
        if not ok then ngx.log(ngx.ERR, "redis connect: ", err) return end
        local res, err = red:hincrby("{key}", ngx.var[1], 1)
        if not res then ngx.log(ngx.ERR, "redis hincrby: ", err) red:close() return end
        red:set_keepalive(60000, 1024)
      }}"#
                    )
                };
                let m = "/usr/lib/nginx/modules";
                (
                    format!("load_module {m}/ndk_http_module.so;\nload_module {m}/ngx_http_lua_module.so;"),
                    "lua_package_path \"/usr/share/lua/5.1/?.lua;;\";".to_owned(),
                    "access_log off;".to_owned(),
                    block("px:opens"),
                    block("px:clicks"),
                )
            }
        };
        // `return` runs in the rewrite phase, before Lua's access phase: with Lua the
        // redirect is sent from the content phase instead.
        let click_answer = if lua_redis.is_some() {
            r#"content_by_lua_block { return ngx.redirect("https://www.example.com/", 302) }"#
        } else {
            "return 302 https://www.example.com/;"
        };
        let conf = format!(
            r#"{modules}
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  server_tokens off;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  {access}
  {lua_http}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location ~ ^/o/([A-Za-z0-9_-]+)\.gif$ {{
      {lua_open}
      add_header Cache-Control "no-store, no-cache, must-revalidate";
      empty_gif;
    }}
    location ~ ^/c/([A-Za-z0-9_-]+)/ {{
      {lua_click}
      add_header Cache-Control "no-store, no-cache, must-revalidate";
      add_header Referrer-Policy "no-referrer";
      {click_answer}
    }}
    location / {{ return 404; }}
  }}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(nginx_bin());
        cmd.arg("-p").arg(&dir).arg("-c").arg(&conf_path);
        let mut proc = Proc::spawn("nginx", &mut cmd, &dir.join("stderr.log"))?;
        wait_tcp(port, &mut proc, Duration::from_secs(10))?;
        Ok(Nginx { port, proc })
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master (it stops its worker); if it does not exit in time,
    /// SIGKILL to it and to the workers it had, by PID, so no worker is orphaned.
    fn drop(&mut self) {
        let workers = children(self.proc.pid());
        if !self.proc.stop(Duration::from_secs(5)) {
            for w in workers {
                // SAFETY: kill(2) with a PID we read as our nginx master's child.
                unsafe {
                    libc::kill(w as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

pub fn nginx_bin() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("nginx")
}

/// The bare hyper current_thread server (`hyper-min current`).
pub struct HyperMin {
    pub port: u16,
    pub proc: Proc,
}

impl HyperMin {
    pub fn start(bin: &Path, scratch: &Path) -> Result<HyperMin> {
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.arg("current").arg(port.to_string());
        let mut proc = Proc::spawn(
            "hyper-min",
            &mut cmd,
            &scratch.join(format!("hyper-min-{port}.log")),
        )?;
        wait_tcp(port, &mut proc, Duration::from_secs(10))?;
        Ok(HyperMin { port, proc })
    }
}

/// One redis-server with the persistence mailbeacon's README recommends (AOF,
/// `appendfsync always`), optionally as a Cluster node.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
    /// AOF with `appendfsync always`; without, no persistence at all (the anchors'
    /// nginx + Lua + Redis baseline).
    aof: bool,
    pub proc: Option<Proc>,
}

impl Redis {
    pub fn start(scratch: &Path, cluster: bool) -> Result<Redis> {
        Redis::start_with(scratch, cluster, true)
    }

    pub fn start_with(scratch: &Path, cluster: bool, aof: bool) -> Result<Redis> {
        let port = free_port()?;
        let dir = scratch.join(format!("redis-{port}"));
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut r = Redis {
            port,
            dir,
            cluster,
            aof,
            proc: None,
        };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", ""])
            .args(["--protected-mode", "no", "--daemonize", "no"]);
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "5000"]);
        }
        let mut p = Proc::spawn("redis-server", &mut cmd, &self.dir.join("stdout.log"))?;
        let t0 = Instant::now();
        while self.cli(&["PING"]).trim() != "PONG" {
            p.check_alive()?;
            if t0.elapsed() > Duration::from_secs(20) {
                return Err(format!("redis-server on {} did not start", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.proc = Some(p);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// `redis-cli` against this node; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Starts again on the same port and directory (the AOF is reloaded).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }
}

/// A 3-master Redis Cluster without replicas.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start(scratch: &Path) -> Result<RedisCluster> {
        let nodes = (0..3)
            .map(|_| Redis::start(scratch, true))
            .collect::<Result<Vec<_>>>()?;
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        let t0 = Instant::now();
        for n in &nodes {
            while !n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                if t0.elapsed() > Duration::from_secs(30) {
                    return Err("the Redis Cluster did not become ready".into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(RedisCluster { nodes })
    }

    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(Redis::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

// ----------------------------------------------------------------------------- /proc

pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// user + system ticks of a whole process (all threads).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Direct children (e.g. nginx's worker).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// (busy, total) ticks of the whole machine.
pub fn sys_ticks() -> (u64, u64) {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return (0, 0);
    }
    // user nice system idle iowait irq softirq steal
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    (busy, busy + v[3] + v[4])
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// What the sampler watches; the fault thread updates PIDs after a restart.
#[derive(Default, Clone)]
pub struct Watched {
    /// The server (with its children, for nginx's worker).
    pub server: Vec<u32>,
    /// Redis nodes.
    pub redis: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub server: Vec<(u32, u64)>,
    pub redis: Vec<(u32, u64)>,
    pub me: u64,
    pub sys: (u64, u64),
    pub server_rss_kib: u64,
}

/// Samples CPU and memory every `every` until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
}

impl Sampler {
    pub fn start(watched: Arc<Mutex<Watched>>, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let me = std::process::id();
            let mut out = Vec::new();
            // Bounded by the caller's `finish`, and by a day as a backstop.
            let t0 = Instant::now();
            while !flag.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(86_400) {
                let w = watched.lock().map(|w| w.clone()).unwrap_or_default();
                let mut server_pids: Vec<u32> = Vec::new();
                for &p in &w.server {
                    server_pids.push(p);
                    server_pids.extend(children(p));
                }
                let server: Vec<(u32, u64)> = server_pids
                    .iter()
                    .filter_map(|&p| cpu_ticks(p).map(|t| (p, t)))
                    .collect();
                let rss = server_pids.iter().filter_map(|&p| rss_kib(p)).sum();
                out.push(Sample {
                    at: Instant::now(),
                    redis: w
                        .redis
                        .iter()
                        .filter_map(|&p| cpu_ticks(p).map(|t| (p, t)))
                        .collect(),
                    server,
                    me: cpu_ticks(me).unwrap_or(0),
                    sys: sys_ticks(),
                    server_rss_kib: rss,
                });
                std::thread::sleep(every);
            }
            out
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// CPU use between two instants, in % of one core.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub server: f64,
    pub redis: f64,
    pub generator: f64,
    /// The whole machine, out of 100 × cores.
    pub machine: f64,
    /// Largest server RSS seen in the window, MiB.
    pub server_rss_mib: f64,
}

fn delta(a: &[(u32, u64)], b: &[(u32, u64)]) -> u64 {
    b.iter()
        .filter_map(|(p, t1)| {
            a.iter()
                .find(|(q, _)| q == p)
                .map(|(_, t0)| t1.saturating_sub(*t0))
        })
        .sum()
}

/// Summarises the samples taken between `from` and `to`.
pub fn cpu_between(samples: &[Sample], from: Instant, to: Instant) -> Cpu {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .collect();
    if inside.len() < 2 {
        return Cpu::default();
    }
    let hz = clk_tck() as f64;
    let (mut srv, mut red) = (0u64, 0u64);
    for w in inside.windows(2) {
        srv += delta(&w[0].server, &w[1].server);
        red += delta(&w[0].redis, &w[1].redis);
    }
    let (first, last) = (inside[0], inside[inside.len() - 1]);
    let secs = (last.at - first.at).as_secs_f64().max(1e-9);
    let pct = |ticks: u64| ticks as f64 / hz / secs * 100.0;
    let (b0, t0) = first.sys;
    let (b1, t1) = last.sys;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    Cpu {
        server: pct(srv),
        redis: pct(red),
        generator: pct(last.me.saturating_sub(first.me)),
        machine: (b1.saturating_sub(b0)) as f64 / (t1.saturating_sub(t0)).max(1) as f64
            * 100.0
            * cores,
        server_rss_mib: inside.iter().map(|s| s.server_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
    }
}

pub fn io_err(e: io::Error) -> String {
    e.to_string()
}
