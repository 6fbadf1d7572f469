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
//!
//! `Dovecot::start_secure` starts the TLS + XOAUTH2 variant (Dovecot 2.3
//! syntax; 2.4 changed both and fails loudly here): a throwaway CA and a server
//! certificate for `127.0.0.2`/`localhost` made with the openssl CLI, one port
//! for implicit TLS (`imaps`) and one for plain IMAP with STARTTLS, and
//! `disable_plaintext_auth = yes`, so LOGIN works only after STARTTLS. It
//! listens on 127.0.0.2 because Dovecot treats a connection whose client and
//! server addresses are equal (127.0.0.1 to 127.0.0.1) as secure and would
//! allow plaintext LOGIN there. SASL XOAUTH2 goes to an `oauth2` passdb that
//! validates HS256 JWTs locally (`introspection_mode = local`) against an HMAC
//! key the harness writes (`Secure::mint` makes tokens for tests).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const USER: &str = "alice@example.test";
pub const PASSWORD: &str = "secret";

pub struct Dovecot {
    /// Plain IMAP (with STARTTLS in the secure variant).
    pub port: u16,
    pub base: PathBuf,
    conf: PathBuf,
    /// The TLS + XOAUTH2 variant's extras.
    pub secure: Option<Secure>,
}

/// What the TLS + XOAUTH2 variant adds.
pub struct Secure {
    /// The address Dovecot listens on (and its certificate names).
    pub host: &'static str,
    /// Implicit TLS.
    pub tls_port: u16,
    /// The private CA's certificate (PEM).
    pub ca: PathBuf,
    /// The HMAC key Dovecot validates XOAUTH2 bearer JWTs with.
    pub hmac_key: Vec<u8>,
}

/// The secure variant's address.
pub const SECURE_HOST: &str = "127.0.0.2";

/// Writes a throwaway CA and a server certificate for 127.0.0.2 and localhost
/// (ECDSA P-256, two days) under `dir`; returns (ca.pem, server.pem, server.key).
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ok = Command::new("openssl").arg("version").output().is_ok();
    assert!(
        ok,
        "openssl (the CLI) is required for the IMAP TLS tests: run ./scripts/test.sh \
         (it installs it), or apt-get install openssl"
    );
    std::fs::create_dir_all(dir).unwrap();
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (cert, key, csr) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("server.csr"),
    );
    let ext = dir.join("server.ext");
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=mailbeacon test CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.2,DNS:localhost\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    (ca, cert, key)
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

/// The greeting of a secure instance's plain port, once it is up: it must
/// offer STARTTLS and refuse plaintext LOGIN before it.
fn greeting_ok(host: &str, port: u16) -> bool {
    let Ok(s) = TcpStream::connect((host, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let mut line = String::new();
    if BufReader::new(s).read_line(&mut line).is_err() {
        return false;
    }
    assert!(
        line.starts_with("* OK") && line.contains("STARTTLS") && line.contains("LOGINDISABLED"),
        "unexpected greeting from the secure Dovecot: {line}"
    );
    true
}

impl Dovecot {
    /// Starts an instance seeded from `tests/fixtures/mailbox`.
    pub fn start() -> Dovecot {
        Dovecot::start_with(false)
    }

    /// Starts the TLS + XOAUTH2 variant (see the module doc), same mailbox.
    pub fn start_secure() -> Dovecot {
        Dovecot::start_with(true)
    }

    fn start_with(secure: bool) -> Dovecot {
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
        // The clock alone is not unique: two tests of one process started
        // in the same clock tick once shared a directory (and so a
        // `base_dir`), and the second Dovecot refused to start.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = PathBuf::from(format!("/tmp/mb-dc-{n}-{seq}-{stamp:x}"));
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
        assert!(
            !(secure && v24),
            "the TLS + XOAUTH2 Dovecot set-up is written for Dovecot 2.3 (found {version})"
        );
        let host = if secure { SECURE_HOST } else { "127.0.0.1" };
        // TLS: a private CA and a server certificate. XOAUTH2: an HMAC key in a
        // dict laid out as <azp>/<alg>/<kid> (no azp/kid in the JWT: "default").
        let (extra, tls_extra) = if secure {
            let (ca, cert, key) = make_certs(&base.join("tls"));
            let mut hmac_key = [0u8; 32];
            std::io::Read::read_exact(
                &mut std::fs::File::open("/dev/urandom").unwrap(),
                &mut hmac_key,
            )
            .unwrap();
            let keys = base.join("oauth2-keys");
            std::fs::create_dir_all(keys.join("default/HS256")).unwrap();
            std::fs::write(
                keys.join("default/HS256/default"),
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, hmac_key),
            )
            .unwrap();
            let oauth2 = base.join("dovecot-oauth2.conf.ext");
            std::fs::write(
                &oauth2,
                format!(
                    "introspection_mode = local\nlocal_validation_key_dict = fs:posix:prefix={}/\n\
                     username_attribute = sub\n",
                    keys.display()
                ),
            )
            .unwrap();
            if root {
                // The auth process reads the keys as the internal user.
                run(Command::new("chown")
                    .arg("-R")
                    .arg(format!("root:{internal_group}"))
                    .arg(&keys)
                    .arg(&oauth2));
                run(Command::new("chmod")
                    .arg("-R")
                    .arg("g+rX")
                    .arg(&keys)
                    .arg(&oauth2));
            }
            (
                Some((ca, hmac_key.to_vec())),
                format!(
                    "ssl = yes\nssl_cert = <{}\nssl_key = <{}\nssl_min_protocol = TLSv1.2\nauth_verbose = yes\n\
                     disable_plaintext_auth = yes\nauth_mechanisms = plain login xoauth2 oauthbearer\n\
                     passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n",
                    cert.display(),
                    key.display(),
                    oauth2.display()
                ),
            )
        } else {
            (None, String::new())
        };
        let conf = base.join("dovecot.conf");
        let log = base.join("log/dovecot.log");
        // The secure variant's passwords are for LOGIN and PLAIN only: a bearer
        // token must never be checked as a password.
        let only_passwords = if secure {
            "  mechanisms = plain login\n"
        } else {
            ""
        };
        for _attempt in 0..5 {
            let port = crate::support::free_port();
            let tls_port = crate::support::free_port();
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
                    format!("passdb {{\n  driver = passwd-file\n{only_passwords}  args = scheme=PLAIN username_format=%u {}\n}}\nuserdb {{\n  driver = passwd-file\n  args = username_format=%u {}\n}}", users.display(), users.display()),
                    "address",
                )
            };
            std::fs::write(
                &conf,
                format!(
                    "{head}base_dir = {b}/run\nstate_dir = {b}/state\ninstance_name = mb-dc-{port}\n\
log_path = {l}\ninfo_log_path = {l}\ndebug_log_path = {l}\nprotocols = imap\nlisten = {host}\n{tls}\
default_internal_user = {internal_user}\n\
default_internal_group = {internal_group}\ndefault_login_user = {login_user}\nmail_uid = {mail_uid}\n\
mail_gid = {mail_gid}\nfirst_valid_uid = {mail_uid}\nlast_valid_uid = {mail_uid}\nfirst_valid_gid = {mail_gid}\n\
last_valid_gid = {mail_gid}\n{mail}\nmail_fsync = never\n{dbs}\n\
namespace inbox {{\n  inbox = yes\n  separator = /\n  mailbox Sent {{\n    special_use = \\Sent\n    auto = subscribe\n  }}\n}}\n\
service imap-login {{\n  inet_listener imap {{\n    {listen} = {host}\n    port = {port}\n  }}\n  inet_listener imaps {{\n    {listen} = {host}\n    port = {imaps}\n{imaps_ssl}  }}{chroot}\n}}\n{rootless}\n",
                    l = log.display(),
                    tls = if secure {
                        tls_extra.clone()
                    } else {
                        format!("ssl = no\n{auth}\nauth_mechanisms = plain login\n")
                    },
                    imaps = if secure { tls_port } else { 0 },
                    imaps_ssl = if secure { "    ssl = yes\n" } else { "" },
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
                let up = if secure {
                    greeting_ok(host, port) && TcpStream::connect((host, tls_port)).is_ok()
                } else {
                    login_ok(port)
                };
                if up {
                    let secure = extra.clone().map(|(ca, hmac_key)| Secure {
                        host,
                        tls_port,
                        ca,
                        hmac_key,
                    });
                    return Dovecot {
                        port,
                        base,
                        conf,
                        secure,
                    };
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
