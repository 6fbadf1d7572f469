//! A private Dovecot IMAP server for the Auto Capture tests: its own config,
//! sockets, logs and Maildir under one short base directory in /tmp, plain IMAP
//! on a free 127.0.0.1 port, one user (`alice@example.test` / `secret`). The
//! system configuration (/etc/dovecot) and services are never used.
//!
//! Written from a verified recipe, with its gotchas: Dovecot refuses uid 0 for
//! mail (as root, mail belongs to the `dovecot` account), socket paths must stay
//! short, and a non-root run needs `default_internal_group` and no chroot.
//!
//! The mailbox is seeded from `tests/fixtures/mailbox/{INBOX,Sent}/*.eml`, with
//! `{{date:-Nh}}` replaced by the time N hours ago, which also becomes the
//! message's INTERNALDATE (the file's mtime), and UIDs in date order.
//! A missing Dovecot fails loudly: the README test command installs it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const USER: &str = "alice@example.test";
pub const PASSWORD: &str = "secret";

pub struct Dovecot {
    pub port: u16,
    pub base: PathBuf,
    conf: PathBuf,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn find_dovecot() {
    let ok = Command::new("dovecot").arg("--version").output().is_ok()
        && ["/usr/lib/dovecot/imap", "/usr/libexec/dovecot/imap"]
            .iter()
            .any(|p| Path::new(p).exists());
    assert!(
        ok,
        "Dovecot with IMAP is required for the Auto Capture tests: run ./scripts/test.sh \
         (it installs dovecot-core and dovecot-imapd), or apt-get install dovecot-core dovecot-imapd"
    );
}

/// RFC 5322 date (UTC) for a Unix time.
pub fn rfc5322(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {d} {} {y} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Replaces `{{date:-Nh}}`; returns the text and the Unix time it names.
fn template(text: &str, now: u64) -> (String, u64) {
    let Some(i) = text.find("{{date:-") else {
        return (text.to_string(), now);
    };
    let rest = &text[i + 8..];
    let j = rest.find("h}}").expect("{{date:-Nh}}");
    let hours: u64 = rest[..j].parse().expect("hours");
    let at = now - hours * 3600;
    (
        format!("{}{}{}", &text[..i], rfc5322(at), &rest[j + 3..]),
        at,
    )
}

fn seed(maildir: &Path, fixtures: &Path) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut all = Vec::new();
    for folder in ["INBOX", "Sent"] {
        let dir = fixtures.join(folder);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        for f in files {
            let (text, at) = template(&std::fs::read_to_string(&f).expect("fixture"), now);
            all.push((at, folder, text));
        }
    }
    // Dovecot assigns UIDs in the order of the time stamp in the file name.
    all.sort_by_key(|(at, _, _)| *at);
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(d)).unwrap();
    }
    std::fs::write(maildir.join("subscriptions"), "Sent\n").unwrap();
    for (seq, (at, folder, text)) in all.into_iter().enumerate() {
        let dir = if folder == "INBOX" {
            maildir.to_path_buf()
        } else {
            let d = maildir.join(format!(".{folder}"));
            for x in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(d.join(x)).unwrap();
            }
            std::fs::write(d.join("maildirfolder"), "").unwrap();
            d
        };
        let flags = if folder == "Sent" { "S" } else { "" };
        let name = format!(
            "{at}.M{seq:06}P1Q{seq}.mailbeacon-test,S={}:2,{flags}",
            text.len()
        );
        let path = dir.join("cur").join(name);
        std::fs::write(&path, &text).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(at))
            .unwrap();
    }
}

fn login_ok(port: u16) -> bool {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() || !line.starts_with("* OK") {
        return false;
    }
    let mut w = s;
    if write!(w, "a1 LOGIN \"{USER}\" \"{PASSWORD}\"\r\n").is_err() {
        return false;
    }
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line.starts_with("a1 ") {
            let ok = line.starts_with("a1 OK");
            let _ = w.write_all(b"a2 LOGOUT\r\n");
            return ok;
        }
    }
}

impl Dovecot {
    /// Starts an instance seeded from `tests/fixtures/mailbox`.
    pub fn start() -> Dovecot {
        find_dovecot();
        let version = run(Command::new("dovecot").arg("--version"));
        let v24 = version
            .split('.')
            .take(2)
            .map(|x| x.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
            >= vec![2, 4];
        let n: u32 = std::process::id();
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let base = PathBuf::from(format!("/tmp/mb-dc-{n}-{stamp:x}"));
        std::fs::create_dir_all(&base).unwrap();
        let root = run(Command::new("id").arg("-u")) == "0";
        let (mail_uid, mail_gid, internal_user, internal_group, login_user) = if root {
            (
                run(Command::new("id").args(["-u", "dovecot"])),
                run(Command::new("id").args(["-g", "dovecot"])),
                "dovecot".to_string(),
                "dovecot".to_string(),
                "dovenull".to_string(),
            )
        } else {
            let me = run(Command::new("id").arg("-un"));
            (
                run(Command::new("id").arg("-u")),
                run(Command::new("id").arg("-g")),
                me.clone(),
                run(Command::new("id").arg("-gn")),
                me,
            )
        };
        for d in ["state", "log", "home"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        let home = base.join("home").join(USER);
        seed(
            &home.join("Maildir"),
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mailbox"),
        );
        let users = base.join("users");
        std::fs::write(
            &users,
            format!(
                "{USER}:{{PLAIN}}{PASSWORD}:{mail_uid}:{mail_gid}::{}::\n",
                home.display()
            ),
        )
        .unwrap();
        run(Command::new("chmod")
            .args(["0711"])
            .arg(&base)
            .arg(base.join("home")));
        run(Command::new("chmod")
            .arg("0700")
            .arg(base.join("state"))
            .arg(base.join("log")));
        if root {
            run(Command::new("chown")
                .arg("-R")
                .arg(format!("{mail_uid}:{mail_gid}"))
                .arg(&home));
            run(Command::new("chown")
                .arg(format!("root:{internal_group}"))
                .arg(&users));
            run(Command::new("chmod").arg("0640").arg(&users));
        } else {
            run(Command::new("chmod").arg("0600").arg(&users));
        }
        run(Command::new("chmod").arg("0700").arg(&home));
        let (chroot, rootless) = if root {
            ("", "")
        } else {
            ("\n  chroot =", "service anvil {\n  chroot =\n}")
        };
        let conf = base.join("dovecot.conf");
        let log = base.join("log/dovecot.log");
        for _attempt in 0..5 {
            let port = crate::support::free_port();
            let b = base.display();
            let (head, auth, mail, dbs, listen) = if v24 {
                (
                    "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n",
                    "auth_allow_cleartext = yes",
                    "mail_driver = maildir\nmail_path = ~/Maildir",
                    format!("passdb passwd-file {{\n  passwd_file_path = {}\n}}\nuserdb passwd-file {{\n  passwd_file_path = {}\n}}", users.display(), users.display()),
                    "listen",
                )
            } else {
                (
                    "",
                    "disable_plaintext_auth = no",
                    "mail_location = maildir:~/Maildir",
                    format!("passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {}\n}}\nuserdb {{\n  driver = passwd-file\n  args = username_format=%u {}\n}}", users.display(), users.display()),
                    "address",
                )
            };
            std::fs::write(
                &conf,
                format!(
                    "{head}base_dir = {b}/run\nstate_dir = {b}/state\ninstance_name = mb-dc-{port}\n\
log_path = {l}\ninfo_log_path = {l}\ndebug_log_path = {l}\nprotocols = imap\nlisten = 127.0.0.1\nssl = no\n\
{auth}\nauth_mechanisms = plain login\ndefault_internal_user = {internal_user}\n\
default_internal_group = {internal_group}\ndefault_login_user = {login_user}\nmail_uid = {mail_uid}\n\
mail_gid = {mail_gid}\nfirst_valid_uid = {mail_uid}\nlast_valid_uid = {mail_uid}\nfirst_valid_gid = {mail_gid}\n\
last_valid_gid = {mail_gid}\n{mail}\nmail_fsync = never\n{dbs}\n\
namespace inbox {{\n  inbox = yes\n  separator = /\n  mailbox Sent {{\n    special_use = \\Sent\n    auto = subscribe\n  }}\n}}\n\
service imap-login {{\n  inet_listener imap {{\n    {listen} = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}{chroot}\n}}\n{rootless}\n",
                    l = log.display(),
                ),
            )
            .unwrap();
            // Daemon mode: its stdio goes to a file, or `output()` would wait for
            // the daemon's children to close the pipes.
            let startup = base.join("log/startup.out");
            let file = std::fs::File::create(&startup).unwrap();
            let status = Command::new("dovecot")
                .arg("-c")
                .arg(&conf)
                .stdin(std::process::Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .status()
                .expect("dovecot");
            if !status.success() {
                let text = std::fs::read_to_string(&startup).unwrap_or_default();
                if text.contains("Address already in use") {
                    continue;
                }
                panic!(
                    "dovecot failed to start: {text}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(15) {
                if login_ok(port) {
                    return Dovecot { port, base, conf };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!(
                "Dovecot did not accept LOGIN:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("no free port for Dovecot");
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
