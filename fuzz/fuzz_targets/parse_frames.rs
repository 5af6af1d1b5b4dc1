//! Fuzz target: any frames, given to the three MDP/0.1 parsers a broker, a worker and a client
//! use (`mdp::worker::Inbound::parse`, `mdp::worker::ToWorker::parse`, `mdp::client::Reply::parse`),
//! must never panic; whatever parses must encode back to the very same frames; error messages
//! and frame dumps (what the broker logs about a peer's message) must never panic either.
//!
//! Input format, so that seeds can be written by hand: a sequence of frames, each a length byte
//! followed by that many bytes (the last frame is cut short if the input ends). `00 06 4d 44 50
//! 43 30 31 04 65 63 68 6f 02 68 69` is `"" "MDPC01" "echo" "hi"`, a client's request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mdp::worker::{Inbound, ToWorker};
use mdp::{client, dump, Frames};

/// Splits the input into length-prefixed frames.
fn split(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        let (frame, rest) = rest.split_at(len);
        frames.push(frame.to_vec());
        data = rest;
    }
    frames
}

fn to_frames(frames: &[Vec<u8>]) -> Frames {
    frames
        .iter()
        .map(|frame| zmq::Message::from(&frame[..]))
        .collect()
}

fn to_bytes(frames: Frames) -> Vec<Vec<u8>> {
    frames.iter().map(|frame| frame.to_vec()).collect()
}

fuzz_target!(|data: &[u8]| {
    let frames = split(data);
    let _ = dump::Message(&to_frames(&frames)).to_string();

    // What a broker receives, after the identity.
    match Inbound::parse(to_frames(&frames)) {
        Ok(Inbound::Client(request)) => {
            let encoded = client::Request::encode_for_dealer(&request.service, request.body);
            assert_eq!(to_bytes(encoded), frames, "client request round trip");
        }
        Ok(Inbound::Worker(command)) => {
            assert_eq!(
                to_bytes(command.encode()),
                frames,
                "worker command round trip"
            );
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }

    // What a worker receives from the broker.
    match ToWorker::parse(to_frames(&frames)) {
        Ok(command) => {
            let mut encoded = to_bytes(command.encode_for_router(b"W1"));
            assert_eq!(encoded.remove(0), b"W1");
            assert_eq!(encoded, frames, "broker-to-worker round trip");
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }

    // What a client receives: with the delimiter (DEALER) or without it (REQ strips it).
    match client::Reply::parse(to_frames(&frames)) {
        Ok(reply) => {
            let mut encoded = to_bytes(client::Reply::encode_for_router(
                b"C1",
                &reply.service,
                reply.body,
            ));
            assert_eq!(encoded.remove(0), b"C1");
            if frames.first().is_some_and(Vec::is_empty) {
                assert_eq!(encoded, frames, "reply round trip");
            } else {
                assert_eq!(encoded.remove(0), b"");
                assert_eq!(encoded, frames, "reply round trip, REQ style");
            }
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
