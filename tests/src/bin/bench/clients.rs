//! The bench's own clients. The bench starts them inside the client pod (its cgroup and
//! namespace), so their connects are captured exactly like an application's; each prints
//! one JSON line the bench parses. Plain blocking std sockets: one connection at a time is
//! what an ordinary client does, and it keeps the client's own cost small and constant.
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

use crate::{
    ConnRateArgs, DnsClientArgs, HoldArgs, PingpongArgs,
    stats::{mean_us, pct_us},
};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A recognisable request (a run of zeros would hide a proxy that drops bytes).
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn connect(addr: &SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// `mesh-bench pingpong-client`: request/response latency over one connection.
pub fn pingpong(args: &PingpongArgs) -> Result<()> {
    ensure!(args.size > 0, "--size must be at least 1");
    ensure!(args.count > 0, "--count must be at least 1");
    let mut stream = connect(&args.connect)?;
    let request = pattern(args.size);
    let mut response = vec![0u8; args.size];
    let mut samples = Vec::with_capacity(args.count as usize);
    for i in 0..args.warmup + args.count {
        let start = Instant::now();
        stream.write_all(&request)?;
        stream
            .read_exact(&mut response)
            .with_context(|| format!("reading echo {i}"))?;
        let elapsed = start.elapsed();
        ensure!(response == request, "echo {i} differs from the request");
        if i >= args.warmup {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    stream.shutdown(Shutdown::Write)?;
    // Drain the server's half-close so the connection ends cleanly on both sides.
    let _ = stream.read(&mut response);
    samples.sort_unstable();
    let out = json!({
        "connect": args.connect.to_string(),
        "size": args.size,
        "warmup": args.warmup,
        "count": samples.len(),
        "p50_us": pct_us(&samples, 0.50),
        "p90_us": pct_us(&samples, 0.90),
        "p99_us": pct_us(&samples, 0.99),
        "mean_us": mean_us(&samples),
        "min_us": pct_us(&samples, 0.0),
        "max_us": pct_us(&samples, 1.0),
    });
    println!("{out}");
    Ok(())
}

/// `mesh-bench conn-rate-client`: sequential short connections, each (connect, send,
/// read the echo, close). The close is the client's FIN, as a short-lived client does;
/// the next connect does not wait for the server's side to finish.
pub fn conn_rate(args: &ConnRateArgs) -> Result<()> {
    ensure!(args.size > 0, "--size must be at least 1");
    ensure!(args.count > 0, "--count must be at least 1");
    let request = pattern(args.size);
    let mut response = vec![0u8; args.size];
    let mut samples = Vec::with_capacity(args.count as usize);
    let mut measured_from = Instant::now();
    for i in 0..args.warmup + args.count {
        if i == args.warmup {
            measured_from = Instant::now();
        }
        let start = Instant::now();
        let mut stream = connect(&args.connect).with_context(|| format!("connection {i}"))?;
        stream.write_all(&request)?;
        stream
            .read_exact(&mut response)
            .with_context(|| format!("reading the echo on connection {i}"))?;
        let elapsed = start.elapsed();
        ensure!(response == request, "echo {i} differs from the request");
        drop(stream);
        if i >= args.warmup {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    let wall = measured_from.elapsed().as_secs_f64();
    samples.sort_unstable();
    let out = json!({
        "connect": args.connect.to_string(),
        "size": args.size,
        "warmup": args.warmup,
        "count": samples.len(),
        "seconds": wall,
        "conn_per_s": samples.len() as f64 / wall,
        "p50_us": pct_us(&samples, 0.50),
        "p99_us": pct_us(&samples, 0.99),
        "mean_us": mean_us(&samples),
    });
    println!("{out}");
    Ok(())
}

/// Lifts the soft open-files limit to the hard one (each held connection is a
/// descriptor); returns the limit now in force.
fn raise_nofile() -> Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(NOFILE)")?;
    }
    Ok(hard.max(soft))
}

/// Opens `count` connections in batches (connect and send on a whole batch, then read
/// each echo), so every counted connection is known to reach the server, through the
/// agents when the pod is enrolled.
fn open_all(args: &HoldArgs, held: &mut Vec<TcpStream>) -> Result<()> {
    const HELLO: &[u8] = b"hold\n";
    let mut echo = [0u8; HELLO.len()];
    while (held.len() as u64) < args.count {
        let n = args.batch.min(args.count - held.len() as u64);
        let first = held.len();
        for i in 0..n {
            let mut stream = connect(&args.connect)
                .with_context(|| format!("connection {}", first as u64 + i + 1))?;
            stream.write_all(HELLO)?;
            held.push(stream);
        }
        for (i, stream) in held[first..].iter_mut().enumerate() {
            stream
                .read_exact(&mut echo)
                .with_context(|| format!("reading the echo on connection {}", first + i + 1))?;
            ensure!(
                echo == HELLO,
                "connection {} echoed other bytes",
                first + i + 1
            );
        }
    }
    Ok(())
}

/// `mesh-bench hold-client`: open, report, hold until stdin closes (the bench's signal)
/// or the timeout. A failure part-way is reported in the same JSON line (with how many
/// are open) and those stay held too, so the bench can still read the agents' memory.
pub fn hold(args: &HoldArgs) -> Result<()> {
    ensure!(args.count > 0, "--count must be at least 1");
    ensure!(args.batch > 0, "--batch must be at least 1");
    let nofile = raise_nofile()?;
    let mut held = Vec::with_capacity(args.count as usize);
    let start = Instant::now();
    let outcome = open_all(args, &mut held);
    let open_ms = start.elapsed().as_secs_f64() * 1000.0;
    let mut out = json!({
        "connect": args.connect.to_string(),
        "count": args.count,
        "opened": held.len(),
        "open_ms": open_ms,
        "nofile": nofile,
    });
    if let Err(e) = &outcome {
        out["error"] = format!("{e:#}").into();
    }
    println!("{out}");
    std::io::stdout().flush()?;

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // EOF (or any error) on stdin is the bench saying "done".
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(args.timeout_secs));
    drop(held);
    if let Err(e) = outcome {
        bail!("opened {} of {}: {e:#}", out["opened"], args.count);
    }
    Ok(())
}

/// `mesh-bench dns-client`: sequential A queries on one connected UDP socket, each
/// answered (NOERROR, at least one address, the query's id) before the next is sent; with
/// `--unique`, each for a name of its own under NAME.
pub fn dns(args: &DnsClientArgs) -> Result<()> {
    use hickory_proto::{
        op::{Message, Query, ResponseCode},
        rr::{Name, RecordType},
    };
    ensure!(args.count > 0, "--count must be at least 1");
    let base = Name::from_ascii(&args.name).context("--name")?;
    let pid = std::process::id();
    let bind: SocketAddr = if args.server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(bind)?;
    socket.connect(args.server)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = vec![0u8; 4096];
    let mut samples = Vec::with_capacity(args.count as usize);
    for i in 0..args.warmup + args.count {
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        let name = if args.unique {
            Name::from_ascii(format!("q{i}-{pid}.{}", args.name)).context("--name")?
        } else {
            base.clone()
        };
        query.add_query(Query::query(name, RecordType::A));
        let wire = query.to_vec()?;
        let start = Instant::now();
        socket.send(&wire)?;
        let n = socket
            .recv(&mut buf)
            .with_context(|| format!("answer {i} from {}", args.server))?;
        let elapsed = start.elapsed();
        let answer = Message::from_vec(&buf[..n]).context("parsing an answer")?;
        ensure!(
            answer.metadata.id == query.metadata.id
                && answer.metadata.response_code == ResponseCode::NoError
                && !answer.answers.is_empty(),
            "answer {i} is not an address for {}: {answer:?}",
            args.name
        );
        if i >= args.warmup {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    samples.sort_unstable();
    let out = json!({
        "server": args.server.to_string(),
        "name": args.name,
        "count": samples.len(),
        "p50_us": pct_us(&samples, 0.50),
        "p99_us": pct_us(&samples, 0.99),
        "mean_us": mean_us(&samples),
    });
    println!("{out}");
    Ok(())
}
