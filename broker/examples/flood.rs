//! Sends a burst of MDP requests for services nobody serves: a load for memory measurements.
//!
//! `cargo run --release -p broker --example flood -- ENDPOINT COUNT [SERVICES]` sends COUNT
//! 16-byte requests over one DEALER, spread round-robin over SERVICES distinct service names
//! (default: as many as requests, so every request names a service nobody serves). Used by
//! `scripts/memory.sh` to show that the broker's memory comes back once the requests expire.
//!
//! With `await` as a fourth argument it prints `queued` once the broker has read every request,
//! then stays to receive the replies, and prints `served` when all COUNT have come back (for the
//! run where workers are started after the flood and serve it).
//!
//! Two environment variables shape a heavier flood: `FLOOD_BODY_BYTES` (default 16) sets the
//! body's size, and `FLOOD_CONNECTIONS` (default 1) splits the COUNT requests over that many
//! DEALERs sending at once, each from its own thread (`await` needs one connection).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(endpoint), Some(Ok(count))) = (args.first(), args.get(1).map(|n| n.parse::<u64>()))
    else {
        eprintln!("usage: flood ENDPOINT COUNT [SERVICES]");
        return ExitCode::from(2);
    };
    let services = match args.get(2).map(|n| n.parse::<u64>()) {
        None => count,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("flood: SERVICES must be a positive number");
            return ExitCode::from(2);
        }
    };
    let await_replies = match args.get(3).map(String::as_str) {
        None => false,
        Some("await") => true,
        Some(other) => {
            eprintln!("flood: unknown fourth argument {other:?} (only \"await\")");
            return ExitCode::from(2);
        }
    };
    let from_env = |name: &str, default: usize| match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text
            .parse::<usize>()
            .map_err(|_| format!("{name} must be a number")),
    };
    let (body_bytes, connections) = match (
        from_env("FLOOD_BODY_BYTES", 16),
        from_env("FLOOD_CONNECTIONS", 1),
    ) {
        (Ok(body), Ok(connections)) if connections > 0 => (body, connections),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("flood: {error}");
            return ExitCode::from(2);
        }
        _ => {
            eprintln!("flood: FLOOD_CONNECTIONS must be at least 1");
            return ExitCode::from(2);
        }
    };
    if connections > 1 {
        if await_replies {
            eprintln!("flood: await needs FLOOD_CONNECTIONS=1");
            return ExitCode::from(2);
        }
        let body = vec![b'x'; body_bytes];
        let threads: Vec<_> = (0..connections as u64)
            .map(|index| {
                let endpoint = endpoint.clone();
                let body = body.clone();
                // Connection `index` sends requests index, index + connections, ...
                let share = (index..count).step_by(connections).count() as u64;
                std::thread::spawn(move || flood(&endpoint, share, services, false, &body))
            })
            .collect();
        let mut failed = false;
        for thread in threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    eprintln!("flood: {error}");
                    failed = true;
                }
                Err(_) => failed = true,
            }
        }
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    match flood(
        endpoint,
        count,
        services,
        await_replies,
        &vec![b'x'; body_bytes],
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flood: {error}");
            ExitCode::FAILURE
        }
    }
}

fn flood(
    endpoint: &str,
    count: u64,
    services: u64,
    await_replies: bool,
    body: &[u8],
) -> Result<(), zmq::Error> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::DEALER)?;
    socket.set_sndhwm(0)?;
    socket.set_linger(-1)?;
    socket.connect(endpoint)?;
    for n in 0..count {
        let service = format!("service-{}", n % services);
        socket.send_multipart([&b""[..], b"MDPC01", service.as_bytes(), body], 0)?;
    }
    // libzmq drops the messages a broker has not read yet when their sender disconnects, so
    // wait until the broker has read them all: it answers this MMI query after every request
    // sent before it on this connection.
    socket.send_multipart([&b""[..], b"MDPC01", b"mmi.service", b"flood"], 0)?;
    if socket.poll(zmq::POLLIN, 60_000)? == 0 {
        eprintln!("flood: the broker did not answer within 60 s");
        return Ok(());
    }
    if !await_replies {
        return Ok(());
    }
    socket.recv_multipart(0)?; // the MMI answer
    println!("queued");
    let mut replies = 0;
    while replies < count {
        if socket.poll(zmq::POLLIN, 60_000)? == 0 {
            eprintln!("flood: {replies} of {count} replies, then none for 60 s");
            return Ok(());
        }
        socket.recv_multipart(0)?;
        replies += 1;
    }
    println!("served");
    Ok(())
}
