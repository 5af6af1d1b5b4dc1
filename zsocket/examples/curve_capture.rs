//! One request and its reply over loopback tcp under a chosen security mechanism, for
//! `scripts/curve-test.sh` to capture: does the body cross the wire in clear?
//!
//! ```sh
//! cargo run -p zsocket --example curve_capture --config build/curve.toml -- curve BODY
//! ```
//!
//! MECHANISM is `curve`, `plain` or `null`. A ROUTER binds `tcp://127.0.0.1:*`, a DEALER connects
//! to it and sends BODY, the ROUTER sends it back, and the DEALER checks it. Prints `port N` (the
//! port to look for in the capture) and exits 0; exits 1 if the round trip does not complete
//! within 10 s, 2 on bad arguments. Under PLAIN the password `PLAIN-PASSWORD-<BODY>` also crosses
//! the wire (in clear, as spec 24 says), and a ZAP handler of a few lines accepts it: libzmq
//! 4.3's PLAIN server needs one.

use std::process::ExitCode;
use std::thread;

use zsocket::curve::{self, KeyPair};

const WAIT_MS: i32 = 10_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mechanism, body] = args.as_slice() else {
        eprintln!("usage: curve_capture curve|plain|null BODY");
        return ExitCode::from(2);
    };
    match run(mechanism, body) {
        Ok(port) => {
            println!("port {port}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("curve_capture: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(mechanism: &str, body: &str) -> Result<String, Box<dyn std::error::Error>> {
    let context = zmq::Context::new();
    let server = context.socket(zmq::ROUTER)?;
    let client = context.socket(zmq::DEALER)?;
    for socket in [&server, &client] {
        socket.set_linger(0)?;
        socket.set_rcvtimeo(WAIT_MS)?;
    }
    let _zap = match mechanism {
        "curve" => {
            let server_keys = KeyPair::generate()?;
            curve::set_server(&server, &server_keys)?;
            curve::set_client(&client, &KeyPair::generate()?, server_keys.public())?;
            None
        }
        "plain" => {
            let zap = zap_accepting_all(&context)?;
            server.set_plain_server(true)?;
            client.set_plain_username(Some("capture"))?;
            client.set_plain_password(Some(&format!("PLAIN-PASSWORD-{body}")))?;
            Some(zap)
        }
        "null" => None,
        other => return Err(format!("unknown mechanism {other:?} (curve, plain, null)").into()),
    };
    let binding = zsocket::bind(&server, "tcp://127.0.0.1:*")?;
    let port = binding
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    client.connect(binding.endpoint())?;
    client.send(body.as_bytes(), 0)?;
    let request = server.recv_multipart(0)?;
    let [identity, received] = request.as_slice() else {
        return Err(format!("expected [identity, body], got {} frames", request.len()).into());
    };
    server.send_multipart([identity.as_slice(), received.as_slice()], 0)?;
    let reply = client.recv_bytes(0)?;
    if reply != body.as_bytes() {
        return Err("the reply is not the body sent".into());
    }
    Ok(port)
}

/// A ZAP handler (spec 27) that says 200 to every request, in a thread that ends with the
/// context.
fn zap_accepting_all(context: &zmq::Context) -> zmq::Result<thread::JoinHandle<()>> {
    let handler = context.socket(zmq::REP)?;
    handler.set_linger(0)?;
    handler.bind("inproc://zeromq.zap.01")?;
    Ok(thread::spawn(move || {
        // [version, request id, domain, address, identity, mechanism, credentials...]
        while let Ok(request) = handler.recv_multipart(0) {
            let (Some(version), Some(request_id)) = (request.first(), request.get(1)) else {
                break;
            };
            let reply: [&[u8]; 6] = [version, request_id, b"200", b"OK", b"capture", b""];
            if handler.send_multipart(reply, 0).is_err() {
                break;
            }
        }
    }))
}
