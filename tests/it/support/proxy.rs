//! A TCP proxy between batchscore and PostgreSQL that can fail the way networks do: reset every
//! connection, go silent while keeping the sockets open (a partition, a dead NAT entry), or
//! refuse new connections (the server is down). Plain threads, so it works whatever the test's
//! runtime is doing.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FORWARD: u8 = 0;
const SILENT: u8 = 1;
const REFUSE: u8 = 2;

/// One proxied connection: the client's socket and the upstream one.
struct Pair {
    client: TcpStream,
    upstream: TcpStream,
}

pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    pairs: Arc<Mutex<Vec<Pair>>>,
}

impl Proxy {
    /// Listen on a free loopback port and forward to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let pairs = Arc::new(Mutex::new(Vec::<Pair>::new()));
        let (accept_mode, accept_pairs) = (Arc::clone(&mode), Arc::clone(&pairs));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accept_mode.load(Ordering::SeqCst) == REFUSE {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                for (from, to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    let mode = Arc::clone(&accept_mode);
                    std::thread::spawn(move || pump(from, to, &mode));
                }
                accept_pairs.lock().unwrap().push(Pair { client, upstream });
            }
        });
        Proxy { port, mode, pairs }
    }

    /// A proxy in front of the server of `url` (`postgres://user@host:port/db?...`), and the
    /// URL that goes through it.
    pub fn in_front_of(url: &str) -> (Proxy, String) {
        let after_scheme = url.split_once("://").unwrap().1;
        let authority = after_scheme.split(['/', '?']).next().unwrap();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let upstream = std::net::ToSocketAddrs::to_socket_addrs(host_port)
            .unwrap()
            .next()
            .unwrap();
        let proxy = Proxy::start(upstream);
        let through = url.replacen(host_port, &format!("127.0.0.1:{}", proxy.port), 1);
        (proxy, through)
    }

    /// The upstream ports of the live connections: `client_port` in `pg_stat_activity`.
    pub fn upstream_ports(&self) -> Vec<i32> {
        self.pairs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| p.upstream.local_addr().ok())
            .map(|a| i32::from(a.port()))
            .collect()
    }

    /// Close every connection at once, both ways; new ones are accepted.
    pub fn reset_all(&self) {
        for pair in self.pairs.lock().unwrap().drain(..) {
            let _ = pair.client.shutdown(Shutdown::Both);
            let _ = pair.upstream.shutdown(Shutdown::Both);
        }
    }

    /// Stop forwarding anything, while keeping every socket open and accepting new ones.
    pub fn go_silent(&self) {
        self.mode.store(SILENT, Ordering::SeqCst);
    }

    /// The server is down: reset every connection, refuse new ones.
    pub fn refuse(&self) {
        self.mode.store(REFUSE, Ordering::SeqCst);
        self.reset_all();
    }

    /// Forward again.
    pub fn forward(&self) {
        self.mode.store(FORWARD, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Close first: what a silent proxy holds is never delivered.
        self.reset_all();
        self.mode.store(FORWARD, Ordering::SeqCst);
    }
}

/// Copy `from` to `to` until either closes; while the proxy is silent, hold what was read.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if mode.load(Ordering::SeqCst) == SILENT {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        while mode.load(Ordering::SeqCst) == SILENT {
            std::thread::sleep(Duration::from_millis(20));
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
