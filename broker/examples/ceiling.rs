//! The ceiling: the least a Majordomo broker can do, to measure the real broker against.
//!
//! `cargo run --release -p broker --example ceiling -- ENDPOINT`
//!
//! It speaks just enough MDP/0.1 for our client and worker: READY puts a worker at the back of
//! one idle FIFO (services are ignored: every worker serves everything), a request goes to the
//! first idle worker or waits in an unbounded queue, and a REPLY goes back to its client and
//! frees the worker. No validation, no heartbeats, no limits, no purging: it exists only so
//! `scripts/bench.sh` can say how close the real broker gets to what the protocol allows (one
//! request per worker at a time). Never use it for anything else.

use std::collections::{HashMap, VecDeque};

fn main() -> Result<(), zmq::Error> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp://*:5555".to_string());
    let context = zmq::Context::new();
    let socket = context.socket(zmq::ROUTER)?;
    socket.set_linger(0)?;
    socket.bind(&endpoint)?;
    eprintln!("ceiling forwarder is active at {endpoint}");

    let mut idle: VecDeque<Vec<u8>> = VecDeque::new();
    let mut service_of: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut waiting: VecDeque<(Vec<u8>, Vec<zmq::Message>)> = VecDeque::new();
    loop {
        let mut frames = Vec::with_capacity(8);
        loop {
            let frame = socket.recv_msg(0)?;
            let more = frame.get_more();
            frames.push(frame);
            if !more {
                break;
            }
        }
        // [identity] [""] [header] ...
        if frames.len() < 4 {
            continue;
        }
        let mut frames = frames.into_iter();
        let sender = frames.next().map(|f| f.to_vec()).unwrap_or_default();
        frames.next();
        let header = frames.next().map(|f| f.to_vec()).unwrap_or_default();
        let mut reply: Option<(Vec<u8>, Vec<u8>, Vec<zmq::Message>)> = None;
        if header == b"MDPC01" {
            frames.next(); // service: ignored
            waiting.push_back((sender, frames.collect()));
        } else {
            let command = frames.next().map(|f| f.to_vec()).unwrap_or_default();
            match command.as_slice() {
                [0x01] => {
                    let service = frames.next().map(|f| f.to_vec()).unwrap_or_default();
                    service_of.insert(sender.clone(), service);
                }
                [0x03] => {
                    let client = frames.next().map(|f| f.to_vec()).unwrap_or_default();
                    frames.next();
                    // Sent after the worker's next request (below), as the broker does: the
                    // worker is what requests wait for.
                    let service = service_of.get(&sender).cloned().unwrap_or_default();
                    reply = Some((client, service, frames.collect()));
                }
                _ => continue,
            }
            idle.push_back(sender);
        }
        while !idle.is_empty() && !waiting.is_empty() {
            let (Some(worker), Some((client, body))) = (idle.pop_front(), waiting.pop_front())
            else {
                break;
            };
            socket.send(&worker[..], zmq::SNDMORE)?;
            socket.send(&b""[..], zmq::SNDMORE)?;
            socket.send(&b"MDPW01"[..], zmq::SNDMORE)?;
            socket.send(&[0x02u8][..], zmq::SNDMORE)?;
            socket.send(&client[..], zmq::SNDMORE)?;
            socket.send(&b""[..], zmq::SNDMORE)?;
            send_rest(&socket, body)?;
        }
        if let Some((client, service, body)) = reply {
            socket.send(&client[..], zmq::SNDMORE)?;
            socket.send(&b""[..], zmq::SNDMORE)?;
            socket.send(&b"MDPC01"[..], zmq::SNDMORE)?;
            socket.send(&service[..], zmq::SNDMORE)?;
            send_rest(&socket, body)?;
        }
    }
}

fn send_rest(socket: &zmq::Socket, frames: Vec<zmq::Message>) -> Result<(), zmq::Error> {
    let last = frames.len().saturating_sub(1);
    for (index, frame) in frames.into_iter().enumerate() {
        socket.send(frame, if index < last { zmq::SNDMORE } else { 0 })?;
    }
    Ok(())
}
